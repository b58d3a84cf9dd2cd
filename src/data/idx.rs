//! The IDX format of MNIST and Fashion-MNIST: a big-endian header (magic number 2051 for
//! images with `n, rows, cols`; 2049 for labels with `n`) followed by `u8` data. Files may be
//! gzipped (`name.gz`) or raw (`name`).
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::{Error, Result};

/// Reads `dir/name.gz` or `dir/name` completely (decompressed).
fn read_bytes(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>)> {
    for (path, gz) in [(dir.join(format!("{name}.gz")), true), (dir.join(name), false)] {
        if !path.is_file() {
            continue;
        }
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut bytes = vec![];
        let res = if gz { GzDecoder::new(file).read_to_end(&mut bytes) } else { std::io::BufReader::new(file).read_to_end(&mut bytes) };
        res.map_err(|e| Error::CorruptData { path: path.clone(), reason: format!("cannot read: {e}") })?;
        return Ok((path, bytes));
    }
    Err(Error::DatasetMissing { name: name.into(), path: dir.join(name), hint: String::new() })
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Images as `(pixels, n, rows * cols)`.
pub fn read_images(dir: &Path, name: &str) -> Result<(Vec<u8>, usize, usize)> {
    let (path, b) = read_bytes(dir, name)?;
    let bad = |reason: String| Error::CorruptData { path: path.clone(), reason };
    if b.len() < 16 {
        return Err(bad(format!("{} bytes is too short for an IDX image header", b.len())));
    }
    if be_u32(&b, 0) != 2051 {
        return Err(bad(format!("magic number {} is not 2051 (IDX images)", be_u32(&b, 0))));
    }
    let (n, r, c) = (be_u32(&b, 4) as usize, be_u32(&b, 8) as usize, be_u32(&b, 12) as usize);
    let want = n * r * c;
    if b.len() - 16 != want {
        return Err(bad(format!("header says {n} images of {r}x{c} ({want} bytes) but the file holds {}", b.len() - 16)));
    }
    Ok((b[16..].to_vec(), n, r * c))
}

/// Labels as bytes.
pub fn read_labels(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let (path, b) = read_bytes(dir, name)?;
    let bad = |reason: String| Error::CorruptData { path: path.clone(), reason };
    if b.len() < 8 {
        return Err(bad(format!("{} bytes is too short for an IDX label header", b.len())));
    }
    if be_u32(&b, 0) != 2049 {
        return Err(bad(format!("magic number {} is not 2049 (IDX labels)", be_u32(&b, 0))));
    }
    let n = be_u32(&b, 4) as usize;
    if b.len() - 8 != n {
        return Err(bad(format!("header says {n} labels but the file holds {}", b.len() - 8)));
    }
    Ok(b[8..].to_vec())
}

/// Writes IDX files (used by tests and by users converting data): images `[n, rows, cols]`.
pub fn write_images(path: &Path, pixels: &[u8], n: usize, rows: usize, cols: usize) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(16 + pixels.len());
    for v in [2051u32, n as u32, rows as u32, cols as u32] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(pixels);
    write_maybe_gz(path, &b)
}

/// Writes an IDX label file.
pub fn write_labels(path: &Path, labels: &[u8]) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(8 + labels.len());
    for v in [2049u32, labels.len() as u32] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(labels);
    write_maybe_gz(path, &b)
}

fn write_maybe_gz(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(path)?, flate2::Compression::fast());
        enc.write_all(bytes)?;
        enc.finish()?;
        Ok(())
    } else {
        std::fs::write(path, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load, DataConfig, DatasetName};
    use tch::Kind;

    /// Writes a tiny MNIST-format dataset (train 6, test 4 images of 2x3) into `dir`.
    fn make(dir: &Path, gz: bool) {
        let ext = if gz { ".gz" } else { "" };
        for (stem, n) in [("train", 6usize), ("t10k", 4)] {
            let pixels: Vec<u8> = (0..n * 6).map(|i| (i * 37 % 256) as u8).collect();
            let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            write_images(&dir.join(format!("{stem}-images-idx3-ubyte{ext}")), &pixels, n, 2, 3).unwrap();
            write_labels(&dir.join(format!("{stem}-labels-idx1-ubyte{ext}")), &labels).unwrap();
        }
    }

    #[test]
    fn reads_gz_and_raw_files() {
        for gz in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            make(dir.path(), gz);
            let cfg = DataConfig { dataset: DatasetName::Mnist, data_dir: Some(dir.path().into()), normalize: false, ..DataConfig::default() };
            let s = load(&cfg, 0).unwrap();
            assert_eq!((s.train.len(), s.test.len(), s.train.input_dim()), (6, 4, 6));
            // pixel 7 of the train set is 7*37 % 256 = 3 -> 3/255
            let v = s.train.x.view([-1]).double_value(&[7]);
            assert!((v - 3.0 / 255.0).abs() < 1e-7);
            assert_eq!(Vec::<i64>::try_from(&s.test.y).unwrap(), vec![0, 1, 2, 3]);
            let cfg = DataConfig { normalize: true, ..cfg };
            let n = load(&cfg, 0).unwrap();
            let want = (3.0 / 255.0 - 0.1307) / 0.3081;
            assert!((n.train.x.view([-1]).double_value(&[7]) - want).abs() < 1e-6);
            assert_eq!(n.train.x.kind(), Kind::Float);
        }
    }

    #[test]
    fn corrupt_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path(), false);
        let cfg = DataConfig { dataset: DatasetName::Mnist, data_dir: Some(dir.path().into()), ..DataConfig::default() };
        let img = dir.path().join("train-images-idx3-ubyte");
        let good = std::fs::read(&img).unwrap();
        // truncated
        std::fs::write(&img, &good[..good.len() - 1]).unwrap();
        let e = load(&cfg, 0).unwrap_err();
        assert!(matches!(e, Error::CorruptData { .. }) && e.to_string().contains("holds"), "{e}");
        // bad magic
        let mut b = good.clone();
        b[3] = 1;
        std::fs::write(&img, &b).unwrap();
        assert!(load(&cfg, 0).unwrap_err().to_string().contains("magic number"));
        // image/label count mismatch
        std::fs::write(&img, &good).unwrap();
        write_labels(&dir.path().join("train-labels-idx1-ubyte"), &[1, 2, 3]).unwrap();
        assert!(load(&cfg, 0).unwrap_err().to_string().contains("6 images but 3 labels"));
        // not gzip at all
        std::fs::remove_file(&img).unwrap();
        std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), b"hello").unwrap();
        assert!(matches!(load(&cfg, 0).unwrap_err(), Error::CorruptData { .. }));
    }
}
