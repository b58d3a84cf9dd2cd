//! Writing results: every output file of widthlab is written atomically (a temporary file in
//! the same folder, flushed to disk, then renamed over the target), so a crash or a full disk
//! never leaves a half-written result; and output paths are checked before the work that
//! produces them starts.
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically, creating its folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| Error::io(path, e))?;
        f.write_all(bytes).map_err(|e| Error::io(path, e))
    })
}

/// Writes `path` atomically through `write`, which creates the file at the temporary path it
/// is given (for writers that only take a path, e.g. libtorch's safetensors); the file is then
/// flushed to disk and renamed over `path`. On any error the temporary file is removed.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = parent(path);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = path.file_name().ok_or_else(|| Error::config(format!("output path {} names no file", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let written = write(&tmp).and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, e)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Checks, before any work, that a file can be written at `path`: not a directory, its folder
/// creatable and writable (a probe file is created and removed).
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::io(path, std::io::Error::other("is a directory, not a file")));
    }
    path.file_name().ok_or_else(|| Error::config(format!("output path {} names no file", path.display())))?;
    let dir = parent(path);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let probe = dir.join(format!(".widthlab-probe-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| Error::io(path, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The folder of `path` (`.` for a bare file name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/result.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        assert!(write_atomic(dir.path(), b"x").is_err());
    }

    #[test]
    fn unwritable_outputs_are_found_before_the_work() {
        let dir = tempfile::tempdir().unwrap();
        check_writable(&dir.path().join("new/sub/out.json")).unwrap();
        assert!(check_writable(dir.path()).unwrap_err().to_string().contains("directory"));
        assert!(check_writable(Path::new("/proc/widthlab-x")).is_err());
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(check_writable(&file.join("under-a-file.json")).is_err());
    }
}
