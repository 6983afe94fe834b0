//! The segment files of a record directory: their names (`tickrelay-<start ns>.rec.zst`, so
//! that names sort by time), a new one for each rotation, and retention — the oldest go first
//! while the directory holds more than `max_bytes`, or while they started longer than `max_age`
//! ago. The segment being written is never removed. A plain struct over a directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PREFIX: &str = "tickrelay-";
const SUFFIX: &str = ".rec.zst";

pub struct Segments {
    dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
}

/// The start time a segment's name carries, if it is a segment's name.
pub fn start_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// The segments in `dir` (files named as the recorder names them): path, start and size, oldest
/// first. Retention and replay read a directory with it.
pub fn in_dir(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64, u64)>> {
    let mut out: Vec<(PathBuf, u64, u64)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let path = e.path();
            let start = start_of(&path)?;
            Some((path, start, e.metadata().ok()?.len()))
        })
        .collect();
    out.sort_by_key(|(_, start, _)| *start);
    Ok(out)
}

impl Segments {
    pub fn new(dir: PathBuf, max_bytes: u64, max_age: Duration) -> Segments {
        Segments {
            dir,
            max_bytes,
            max_age,
        }
    }

    /// A new segment starting at `start_ns`.
    pub fn create(&self, start_ns: u64) -> std::io::Result<(PathBuf, File)> {
        let path = self.dir.join(format!("{PREFIX}{start_ns:020}{SUFFIX}"));
        let file = File::options().create_new(true).append(true).open(&path)?;
        Ok((path, file))
    }

    /// Every segment in the directory, oldest first, with its size.
    pub fn list(&self) -> std::io::Result<Vec<(PathBuf, u64, u64)>> {
        in_dir(&self.dir)
    }

    /// Removes the oldest segments past the limits (never `current`); answers what went and why.
    pub fn enforce_retention(&self, now_ns: u64, current: &Path) -> Vec<(PathBuf, &'static str)> {
        let Ok(all) = self.list() else {
            return Vec::new();
        };
        let mut total: u64 = all.iter().map(|(_, _, size)| size).sum();
        let oldest_kept = now_ns.saturating_sub(self.max_age.as_nanos() as u64);
        let mut removed = Vec::new();
        for (path, start, size) in all {
            if path == current {
                break;
            }
            let why = if start < oldest_kept {
                "older than max_age_hours"
            } else if total > self.max_bytes {
                "over max_bytes"
            } else {
                break;
            };
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(size);
                removed.push((path, why));
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("tickrelay-segments-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_oldest_go_first_past_the_size_and_the_age() {
        let d = dir("retention");
        let hour = 3_600_000_000_000u64;
        let s = Segments::new(d.clone(), 250, Duration::from_secs(3 * 3600));
        let mut paths = Vec::new();
        for i in 0..5u64 {
            let (path, mut f) = s.create(i * hour).unwrap();
            std::io::Write::write_all(&mut f, &[0; 100]).unwrap();
            paths.push(path);
        }
        std::fs::write(d.join("notes.txt"), "not a segment").unwrap();
        // Now is hour 5: segments 0 and 1 are older than 3 h; then 300 bytes > 250.
        let removed = s.enforce_retention(5 * hour, &paths[4]);
        let names: Vec<_> = removed
            .iter()
            .map(|(p, why)| (start_of(p).unwrap() / hour, *why))
            .collect();
        assert_eq!(
            names,
            [
                (0, "older than max_age_hours"),
                (1, "older than max_age_hours"),
                (2, "over max_bytes")
            ]
        );
        assert_eq!(s.list().unwrap().len(), 2);
        assert!(d.join("notes.txt").exists(), "only segments are touched");
        // The current segment stays, whatever its size or age.
        assert!(s.enforce_retention(100 * hour, &paths[4]).len() == 1);
        assert!(paths[4].exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
