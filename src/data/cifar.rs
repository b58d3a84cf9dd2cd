//! CIFAR-10 in its binary version: files of 10000 records, each one label byte followed by
//! 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32x32).
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Pixels per record (3 x 32 x 32).
pub const RECORD_PIXELS: usize = 3072;
const RECORD: usize = RECORD_PIXELS + 1;

/// `(pixels, labels)` of one split.
pub type Split = (Vec<u8>, Vec<u8>);

fn read_batches(files: &[PathBuf]) -> Result<Split> {
    let (mut pix, mut lab) = (vec![], vec![]);
    for f in files {
        let b = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        if b.is_empty() || b.len() % RECORD != 0 {
            return Err(Error::CorruptData { path: f.clone(), reason: format!("{} bytes is not a multiple of the 3073-byte CIFAR-10 record", b.len()) });
        }
        for r in b.chunks_exact(RECORD) {
            if r[0] > 9 {
                return Err(Error::CorruptData { path: f.clone(), reason: format!("label {} is not a CIFAR-10 class", r[0]) });
            }
            lab.push(r[0]);
            pix.extend_from_slice(&r[1..]);
        }
    }
    Ok((pix, lab))
}

/// Reads the five training batches and the test batch from `dir` or
/// `dir/cifar-10-batches-bin`.
pub fn read(dir: &Path) -> Result<(Split, Split)> {
    let root = [dir.join("cifar-10-batches-bin"), dir.to_path_buf()]
        .into_iter()
        .find(|d| d.join("test_batch.bin").is_file())
        .ok_or_else(|| Error::DatasetMissing { name: "cifar10".into(), path: dir.into(), hint: String::new() })?;
    let train: Vec<PathBuf> = (1..=5).map(|i| root.join(format!("data_batch_{i}.bin"))).collect();
    if let Some(m) = train.iter().find(|f| !f.is_file()) {
        return Err(Error::DatasetMissing { name: "cifar10".into(), path: m.clone(), hint: String::new() });
    }
    Ok((read_batches(&train)?, read_batches(&[root.join("test_batch.bin")])?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load, DataConfig, DatasetName};

    fn write_batch(path: &Path, n: usize, first_label: u8) {
        let mut b = vec![];
        for i in 0..n {
            b.push((first_label as usize + i) as u8 % 10);
            b.extend((0..RECORD_PIXELS).map(|p| ((p + i) % 256) as u8));
        }
        std::fs::write(path, b).unwrap();
    }

    #[test]
    fn reads_generated_batches_in_either_layout() {
        for nested in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let root = if nested { dir.path().join("cifar-10-batches-bin") } else { dir.path().to_path_buf() };
            std::fs::create_dir_all(&root).unwrap();
            for i in 1..=5 {
                write_batch(&root.join(format!("data_batch_{i}.bin")), 3, i as u8);
            }
            write_batch(&root.join("test_batch.bin"), 2, 0);
            let cfg = DataConfig { dataset: DatasetName::Cifar10, data_dir: Some(dir.path().into()), normalize: true, ..DataConfig::default() };
            let s = load(&cfg, 0).unwrap();
            assert_eq!((s.train.len(), s.test.len(), s.train.input_dim()), (15, 2, 3072));
            assert_eq!(Vec::<i64>::try_from(&s.test.y).unwrap(), vec![0, 1]);
            // test record 1, pixel 5 = (5 + 1) % 256 = 6 -> (6/255 - 0.5) / 0.5
            let v = s.test.x.double_value(&[1, 5]);
            assert!((v - (6.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
        }
    }

    #[test]
    fn wrong_sizes_and_labels_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        for i in 1..=5 {
            write_batch(&dir.path().join(format!("data_batch_{i}.bin")), 1, 0);
        }
        std::fs::write(dir.path().join("test_batch.bin"), vec![0u8; 100]).unwrap();
        let cfg = DataConfig { dataset: DatasetName::Cifar10, data_dir: Some(dir.path().into()), ..DataConfig::default() };
        assert!(load(&cfg, 0).unwrap_err().to_string().contains("3073-byte"));
        let mut rec = vec![42u8];
        rec.extend(vec![0u8; RECORD_PIXELS]);
        std::fs::write(dir.path().join("test_batch.bin"), rec).unwrap();
        assert!(load(&cfg, 0).unwrap_err().to_string().contains("label 42"));
        std::fs::remove_file(dir.path().join("data_batch_3.bin")).unwrap();
        assert!(matches!(load(&cfg, 0).unwrap_err(), Error::DatasetMissing { .. }));
    }
}
