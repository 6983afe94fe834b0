//! The Markdown files link to each other and into the source tree: every relative link must name a
//! file that exists and every `#anchor` a heading of the file it points into. No document and no
//! source file may refer to a place outside the repository.
//!
//! Std only and offline: `http(s)` and `mailto` links are not fetched. Text in fenced code blocks
//! and inline code spans is not read as links or headings.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Text no document or source file may contain: places outside the repository.
const OUTSIDE: [&str; 2] = ["../shared", "/work/"];

/// Link targets that are not checked (nothing is fetched).
const EXTERNAL: [&str; 3] = ["http://", "https://", "mailto:"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A path as the failure messages show it: relative to the repository.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The files in `dir` whose name ends in `.{extension}`; with `recurse`, in its subfolders too.
fn files_in(dir: &Path, extension: &str, recurse: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if recurse {
                out.extend(files_in(&path, extension, recurse));
            }
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path);
        }
    }
    out
}

/// The project's Markdown: the front page, the benchmarks, the manual (`docs/`), `contrib/` and
/// the READMEs of `fuzz/` and of each folder under `tests/`.
fn markdown_files() -> Vec<PathBuf> {
    let root = root();
    let mut files: Vec<PathBuf> = ["README.md", "BENCHMARKS.md", "fuzz/README.md"]
        .iter()
        .map(|name| root.join(name))
        .filter(|path| path.is_file())
        .collect();
    files.extend(files_in(&root.join("docs"), "md", false));
    files.extend(files_in(&root.join("contrib"), "md", false));
    for entry in fs::read_dir(root.join("tests"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let readme = entry.path().join("README.md");
        if readme.is_file() {
            files.push(readme);
        }
    }
    files.sort();
    files
}

/// The lines of `text` outside fenced code blocks, with their numbers (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(*m));
        match (fence, marker) {
            (None, Some(opening)) => fence = Some(opening),
            (Some(open), Some(closing)) if open == closing => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// `line` without its inline code spans, whose brackets are not links.
fn without_code(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The targets of the Markdown links `[text](target)` and `[text](target "title")` in `line`.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        // Up to the parenthesis that closes the link (a URL may hold balanced ones).
        let mut depth = 1;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let target = after[..end].split_whitespace().next().unwrap_or_default();
        targets.push(
            target
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned(),
        );
        rest = &after[end..];
    }
    targets
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped except `-` and `_`, each
/// space a `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every heading anchor of a Markdown text, a repeated one numbered as GitHub does (`x`, `x-1`).
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        let rest = &line[hashes..];
        if !(1..=6).contains(&hashes) || !(rest.is_empty() || rest.starts_with(' ')) {
            continue;
        }
        // An ATX heading may close with a run of `#`s.
        let title = rest.trim().trim_end_matches('#');
        let base = slug(title);
        let count = seen.entry(base.clone()).or_insert(0);
        let anchor = if *count == 0 {
            base
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        out.push(anchor);
    }
    out
}

/// Checks one link of `file`: the file it names exists and, for a Markdown file, has the anchor.
/// `headings` keeps the anchors of the files read so far.
fn check(
    file: &Path,
    target: &str,
    headings: &mut HashMap<PathBuf, Vec<String>>,
) -> Result<(), String> {
    if target.is_empty() {
        return Err("empty target".into());
    }
    if EXTERNAL.iter().any(|scheme| target.starts_with(*scheme)) {
        return Ok(());
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let resolved = if path.is_empty() {
        file.to_path_buf()
    } else if let Some(from_root) = path.strip_prefix('/') {
        root().join(from_root)
    } else {
        file.parent().unwrap_or(root()).join(path)
    };
    if !resolved.exists() {
        return Err(format!("{} does not exist", shown(&resolved)));
    }
    let Some(anchor) = anchor else {
        return Ok(());
    };
    if resolved.extension().and_then(|e| e.to_str()) != Some("md") {
        return Ok(());
    }
    let known = headings
        .entry(resolved.clone())
        .or_insert_with(|| anchors(&fs::read_to_string(&resolved).unwrap_or_default()));
    if known.iter().any(|a| a == anchor) {
        Ok(())
    } else {
        Err(format!(
            "no heading of {} has the anchor #{anchor}",
            shown(&resolved)
        ))
    }
}

/// Every relative link in the project's Markdown names a file that exists, and every `#anchor` a
/// heading of the Markdown file it points into.
#[test]
fn every_relative_link_and_anchor_resolves() {
    let files = markdown_files();
    assert!(
        files.iter().any(|f| f.ends_with("README.md")),
        "no Markdown file found under {}",
        root().display()
    );
    let mut headings = HashMap::new();
    let mut broken = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", shown(file)));
        for (number, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if let Err(why) = check(file, &target, &mut headings) {
                    broken.push(format!("{}:{number}: ({target}) {why}", shown(file)));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} broken links:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

/// No document and no Rust source under `src/` refers to a place outside the repository.
#[test]
fn nothing_refers_outside_the_repository() {
    let mut files = markdown_files();
    files.extend(files_in(&root().join("src"), "rs", true));
    let mut found = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            for outside in OUTSIDE.iter().filter(|o| line.contains(**o)) {
                found.push(format!("{}:{}: {outside}", shown(file), i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "references outside the repository:\n{}",
        found.join("\n")
    );
}

/// Every Markdown file a Rust source or test names (`docs/browser-protocol.md`, `fuzz/README.md`,
/// …) is in the repository: the code points readers at documents they have.
#[test]
fn documents_named_in_the_code_exist() {
    let mut files = files_in(&root().join("src"), "rs", true);
    files.extend(files_in(&root().join("tests"), "rs", true));
    // This file's own examples are made up.
    files.retain(|f| !f.ends_with("tests/links.rs"));
    let mut missing = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            for name in md_names(line) {
                let here = file.parent().map(|d| d.join(&name));
                if !root().join(&name).is_file() && !here.is_some_and(|p| p.is_file()) {
                    missing.push(format!("{}:{}: {name}", shown(file), i + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documents named in the code but not in the repository:\n{}",
        missing.join("\n")
    );
}

/// The `*.md` paths a line names: runs of path characters ending in `.md`.
fn md_names(line: &str) -> Vec<String> {
    let path_char = |c: char| c.is_ascii_alphanumeric() || "_-./".contains(c);
    let mut out = Vec::new();
    for (at, _) in line.match_indices(".md") {
        let end = at + 3;
        if line[end..].chars().next().is_some_and(path_char) {
            continue;
        }
        let start = line[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !path_char(*c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let name = &line[start..end];
        if name.len() > 3 && !name.starts_with('.') {
            out.push(name.to_owned());
        }
    }
    out
}

/// Anchors are made as GitHub makes them, outside code blocks, with repeats numbered.
#[test]
fn anchors_follow_github() {
    assert_eq!(
        slug("Scale-out: primaries, edges and one Alpaca connection"),
        "scale-out-primaries-edges-and-one-alpaca-connection"
    );
    assert_eq!(slug("The dashboard (`GET /`)"), "the-dashboard-get-");
    assert_eq!(slug("Client → daemon"), "client--daemon");
    assert_eq!(
        slug("Latency with 1,000 clients"),
        "latency-with-1000-clients"
    );
    assert_eq!(
        slug("spot_price_update and option_price_update"),
        "spot_price_update-and-option_price_update"
    );
    let text = "# Title\n## Part ##\n```sh\n# not a heading\n```\n## Part\n#hashtag\n";
    assert_eq!(anchors(text), ["title", "part", "part-1"]);
}

/// Document names are read out of source lines.
#[test]
fn document_names_are_read_out_of_code() {
    assert_eq!(
        md_names("//! See docs/recording.md, and (README.md); not x.mdx"),
        ["docs/recording.md", "README.md"]
    );
}

/// Links are read outside inline code, with titles and balanced parentheses.
#[test]
fn links_are_read_outside_code() {
    let line =
        r#"See [the docs](docs/a.md#b "title"), `[not](a link)` and [web](https://e.com/x_(y))."#;
    assert_eq!(link_targets(line), ["docs/a.md#b", "https://e.com/x_(y)"]);
}
