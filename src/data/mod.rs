//! Datasets: IDX (MNIST, Fashion-MNIST; gzipped or raw), CIFAR-10 binary batches, and the
//! multi-index teacher data of appendix D.2, as flat `f32` inputs with integer labels.
//!
//! Where the files are looked for: `data_dir` in the config, else the environment variable
//! `WIDTHLAB_DATA_DIR` (joined with the dataset's folder name), else the defaults:
//! Fashion-MNIST at `/usr/share/datasets/fashion-mnist` (Debian package
//! `dataset-fashion-mnist`, installed by `environment/setup.sh`), MNIST at `data/mnist` and
//! CIFAR-10 at `data/cifar10` (no package registry ships those two: put the standard files
//! there). Normalisation follows the authors' code: pixels / 255, then per-dataset mean and
//! std (MNIST 0.1307/0.3081, Fashion-MNIST 0.2860/0.3530, CIFAR-10 0.5/0.5 per channel).
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::rng::{self, stream};
use crate::{Error, Result};

pub mod cifar;
pub mod idx;
pub mod teacher;
pub mod text;

pub use teacher::{teacher_label, TeacherConfig};

/// A labelled dataset held as two tensors.
#[derive(Debug)]
pub struct Dataset {
    /// Inputs `[N, d]`, `f32`.
    pub x: Tensor,
    /// Class labels `[N]`, `i64` in `0..num_classes`.
    pub y: Tensor,
    pub num_classes: i64,
    pub name: String,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.x.size()[0] as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Input dimension `d`.
    pub fn input_dim(&self) -> i64 {
        self.x.size()[1]
    }
    /// The same data on another device.
    pub fn to_device(&self, device: Device) -> Dataset {
        Dataset { x: self.x.to_device(device), y: self.y.to_device(device), num_classes: self.num_classes, name: self.name.clone() }
    }
    /// The examples at `idx`.
    ///
    /// # Shapes
    /// -> (`[idx.len(), d]`, `[idx.len()]`)
    pub fn batch(&self, idx: &[usize]) -> (Tensor, Tensor) {
        let it = rng::index_tensor(idx, self.x.device());
        (self.x.index_select(0, &it), self.y.index_select(0, &it))
    }
    /// `n` examples (at most all) drawn without replacement by `rng`: the first `n` of a
    /// random permutation.
    pub fn sample(&self, n: usize, rng: &mut impl rand::Rng) -> (Tensor, Tensor) {
        let mut p = rng::permutation(self.len(), rng);
        p.truncate(n.min(self.len()));
        self.batch(&p)
    }
    /// A seeded random subset of `n` examples.
    pub fn subset(&self, n: usize, seed: u64) -> Result<Dataset> {
        if n == 0 || n > self.len() {
            return Err(Error::config(format!("subset of {n} requested from {} examples of {}", self.len(), self.name)));
        }
        let (x, y) = self.sample(n, &mut rng::rng(seed, stream::SUBSET));
        Ok(Dataset { x, y, num_classes: self.num_classes, name: self.name.clone() })
    }
}

/// Train and test split.
#[derive(Debug)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

/// Which data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    #[default]
    FashionMnist,
    Mnist,
    Cifar10,
    /// The multi-index teacher of appendix D.2 (generated).
    Teacher,
}

const NAMES: &str = "fashion-mnist, mnist, cifar10, teacher";

impl DatasetName {
    /// Number of classes (the model's `d_out`; chance accuracy is its inverse): 10 for the
    /// image datasets, 2 for the teacher data (the sign of the teacher).
    pub fn num_classes(self) -> i64 {
        match self {
            DatasetName::FashionMnist | DatasetName::Mnist | DatasetName::Cifar10 => 10,
            DatasetName::Teacher => 2,
        }
    }
}

impl FromStr for DatasetName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fashion-mnist" | "fashionmnist" | "fmnist" => Ok(DatasetName::FashionMnist),
            "mnist" => Ok(DatasetName::Mnist),
            "cifar10" | "cifar-10" => Ok(DatasetName::Cifar10),
            "teacher" => Ok(DatasetName::Teacher),
            _ => Err(Error::config(format!("unknown dataset `{s}` (use {NAMES})"))),
        }
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Mnist => "mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Teacher => "teacher",
        })
    }
}

/// Data settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: DatasetName,
    /// Directory holding the dataset's files (see the module docs for the defaults).
    pub data_dir: Option<PathBuf>,
    /// Train on a seeded random subset of this many examples.
    pub train_subset: Option<usize>,
    /// Evaluate on a seeded random subset of this many test examples.
    pub test_subset: Option<usize>,
    /// Normalise pixels with the per-dataset mean and std (images only).
    pub normalize: bool,
    /// Teacher data settings (only for `dataset = "teacher"`).
    pub teacher: TeacherConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: DatasetName::FashionMnist,
            data_dir: None,
            train_subset: None,
            test_subset: None,
            normalize: true,
            teacher: TeacherConfig::default(),
        }
    }
}

impl DataConfig {
    /// `(d_in, classes, training points, test points)` of the dataset, known before loading:
    /// the standard sizes of the real datasets (files in `data_dir` could differ), the
    /// configured ones of the teacher. Subsets are not applied.
    pub fn shape(&self) -> (i64, i64, usize, usize) {
        match self.dataset {
            DatasetName::FashionMnist | DatasetName::Mnist => (784, 10, 60_000, 10_000),
            DatasetName::Cifar10 => (cifar::RECORD_PIXELS as i64, 10, 50_000, 10_000),
            DatasetName::Teacher => (self.teacher.d_in as i64, 2, self.teacher.n_train, self.teacher.n_test),
        }
    }

    /// A lower bound of the memory the loaded data takes: 4-byte inputs and 8-byte labels.
    pub fn min_memory_bytes(&self) -> f64 {
        let (d_in, _, n_train, n_test) = self.shape();
        (n_train as f64 + n_test as f64) * (4.0 * d_in as f64 + 8.0)
    }

    /// The directory the files of `self.dataset` are read from.
    pub fn resolve_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        let folder = match self.dataset {
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Mnist => "mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Teacher => "teacher",
        };
        if let Ok(root) = std::env::var("WIDTHLAB_DATA_DIR") {
            return Path::new(&root).join(folder);
        }
        match self.dataset {
            DatasetName::FashionMnist => PathBuf::from("/usr/share/datasets/fashion-mnist"),
            _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(folder),
        }
    }
}

/// How to get each dataset, for error messages.
fn hint(name: DatasetName, dir: &Path) -> String {
    match name {
        DatasetName::FashionMnist => "install it with `apt-get install dataset-fashion-mnist` (or run `bash environment/setup.sh`), or point --data-dir / WIDTHLAB_DATA_DIR at a folder with the four *-ubyte(.gz) files".into(),
        DatasetName::Mnist => format!("MNIST is not available from the package registries; put train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) in {} or set --data-dir / WIDTHLAB_DATA_DIR", dir.display()),
        DatasetName::Cifar10 => format!("CIFAR-10 is not available from the package registries; put the binary version (data_batch_1.bin .. data_batch_5.bin, test_batch.bin) in {} (or its cifar-10-batches-bin/ folder) or set --data-dir / WIDTHLAB_DATA_DIR", dir.display()),
        DatasetName::Teacher => "teacher data is generated and needs no files".into(),
    }
}

/// `(mean, std)` of the authors' normalisation.
fn norm_stats(name: DatasetName) -> (f64, f64) {
    match name {
        DatasetName::Mnist => (0.1307, 0.3081),
        DatasetName::FashionMnist => (0.2860, 0.3530),
        DatasetName::Cifar10 | DatasetName::Teacher => (0.5, 0.5),
    }
}

/// Pixels `u8 [N, d]` -> `f32`, scaled to [0, 1] and optionally normalised.
fn pixels_to_tensor(pixels: Vec<u8>, n: usize, d: usize, name: DatasetName, normalize: bool) -> Tensor {
    let x = Tensor::from_slice(&pixels).reshape([n as i64, d as i64]).to_kind(Kind::Float) / 255.0;
    if normalize {
        let (m, s) = norm_stats(name);
        (x - m) / s
    } else {
        x
    }
}

fn labels_to_tensor(labels: &[u8]) -> Tensor {
    let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_slice(&v)
}

/// The decoded images and labels of one IDX split.
struct IdxPart {
    pixels: Vec<u8>,
    n: usize,
    d: usize,
    labels: Vec<u8>,
}

/// Decoded IDX files are kept for the life of the process (about 55 MB for Fashion-MNIST):
/// a sweep trains hundreds of runs on the same files, and decompressing them took about
/// 0.5 s of CPU per run, as long as a whole small run.
fn cached_idx(dir: &Path, stem: &str) -> Result<std::sync::Arc<IdxPart>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<(PathBuf, String), Arc<IdxPart>>>> = OnceLock::new();
    let key = (dir.to_path_buf(), stem.to_string());
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(p) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(p.clone());
    }
    let (pixels, n, d) = idx::read_images(dir, &format!("{stem}-images-idx3-ubyte"))?;
    let labels = idx::read_labels(dir, &format!("{stem}-labels-idx1-ubyte"))?;
    let part = Arc::new(IdxPart { pixels, n, d, labels });
    cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, part.clone());
    Ok(part)
}

/// Loads a dataset as configured; subsets are drawn with `seed`.
pub fn load(cfg: &DataConfig, seed: u64) -> Result<Splits> {
    let name = cfg.dataset;
    let splits = match name {
        DatasetName::Teacher => teacher::generate(&cfg.teacher, seed)?,
        DatasetName::Mnist | DatasetName::FashionMnist => {
            let dir = cfg.resolve_dir();
            let missing = || Error::DatasetMissing { name: name.to_string(), path: dir.clone(), hint: hint(name, &dir) };
            if !dir.is_dir() {
                return Err(missing());
            }
            // Subsets are drawn here, on the bytes, before the float conversion: the same rows
            // as `Dataset::subset` (same permutation), without converting all 60k images.
            let part = |stem: &str, subset: Option<(usize, u64)>| -> Result<Dataset> {
                let file = cached_idx(&dir, stem).map_err(|e| match e {
                    Error::DatasetMissing { .. } => missing(),
                    other => other,
                })?;
                let IdxPart { pixels, n, d, labels } = &*file;
                if labels.len() != *n {
                    return Err(Error::CorruptData {
                        path: dir.clone(),
                        reason: format!("{stem}: {n} images but {} labels", labels.len()),
                    });
                }
                let rows: Option<Vec<usize>> = match subset {
                    Some((k, s)) if k > 0 && k < *n => {
                        let mut p = rng::permutation(*n, &mut rng::rng(s, stream::SUBSET));
                        p.truncate(k);
                        Some(p)
                    }
                    _ => None,
                };
                let (x, y) = match rows {
                    Some(p) => {
                        let pix: Vec<u8> = p.iter().flat_map(|&i| pixels[i * d..(i + 1) * d].iter().copied()).collect();
                        let lab: Vec<u8> = p.iter().map(|&i| labels[i]).collect();
                        (pixels_to_tensor(pix, p.len(), *d, name, cfg.normalize), labels_to_tensor(&lab))
                    }
                    None => (pixels_to_tensor(pixels.clone(), *n, *d, name, cfg.normalize), labels_to_tensor(labels)),
                };
                Ok(Dataset { x, y, num_classes: name.num_classes(), name: name.to_string() })
            };
            let train = part("train", cfg.train_subset.map(|k| (k, seed)))?;
            let test = part("t10k", cfg.test_subset.map(|k| (k, seed ^ 0x7e57)))?;
            if cfg.train_subset == Some(0) {
                return Err(Error::config("data.train_subset must be >= 1"));
            }
            if let Some(k) = cfg.train_subset.filter(|&k| k > train.len()) {
                return Err(Error::config(format!("data.train_subset {k} exceeds the {} training examples", train.len())));
            }
            // Already subset: return before the generic subset step below.
            return Ok(Splits { train, test });
        }
        DatasetName::Cifar10 => {
            let dir = cfg.resolve_dir();
            let (train, test) = cifar::read(&dir).map_err(|e| match e {
                Error::DatasetMissing { .. } => Error::DatasetMissing { name: name.to_string(), path: dir.clone(), hint: hint(name, &dir) },
                other => other,
            })?;
            let to_ds = |(pix, labels): (Vec<u8>, Vec<u8>)| {
                let n = labels.len();
                Dataset { x: pixels_to_tensor(pix, n, cifar::RECORD_PIXELS, name, cfg.normalize), y: labels_to_tensor(&labels), num_classes: name.num_classes(), name: name.to_string() }
            };
            Splits { train: to_ds(train), test: to_ds(test) }
        }
    };
    let train = match cfg.train_subset {
        Some(n) if n < splits.train.len() => splits.train.subset(n, seed)?,
        Some(n) if n > splits.train.len() => {
            return Err(Error::config(format!("data.train_subset {n} exceeds the {} training examples", splits.train.len())))
        }
        _ => splits.train,
    };
    let test = match cfg.test_subset {
        Some(n) if n < splits.test.len() => splits.test.subset(n, seed ^ 0x7e57)?,
        _ => splits.test,
    };
    Ok(Splits { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for n in [DatasetName::FashionMnist, DatasetName::Mnist, DatasetName::Cifar10, DatasetName::Teacher] {
            assert_eq!(n.to_string().parse::<DatasetName>().unwrap(), n);
        }
        let e = "imagenet".parse::<DatasetName>().unwrap_err().to_string();
        assert!(e.contains("fashion-mnist") && e.contains("imagenet"), "{e}");
    }

    #[test]
    fn missing_data_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        for (name, needle) in [
            (DatasetName::Mnist, "not available from the package registries"),
            (DatasetName::FashionMnist, "apt-get install dataset-fashion-mnist"),
            (DatasetName::Cifar10, "data_batch_1.bin"),
        ] {
            let cfg = DataConfig { dataset: name, data_dir: Some(dir.path().join("nothing")), ..DataConfig::default() };
            let e = load(&cfg, 0).unwrap_err();
            assert!(matches!(e, Error::DatasetMissing { .. }), "{e}");
            assert!(e.to_string().contains(needle), "{e}");
            // an existing but empty folder is missing data too
            let cfg = DataConfig { dataset: name, data_dir: Some(dir.path().to_path_buf()), ..DataConfig::default() };
            assert!(matches!(load(&cfg, 0).unwrap_err(), Error::DatasetMissing { .. }));
        }
    }

    #[test]
    fn subsets_are_seeded() {
        let cfg = DataConfig { dataset: DatasetName::Teacher, teacher: TeacherConfig { d_in: 5, n_train: 100, n_test: 10 }, ..DataConfig::default() };
        let s = load(&cfg, 1).unwrap();
        let a = s.train.subset(10, 3).unwrap();
        let b = s.train.subset(10, 3).unwrap();
        let c = s.train.subset(10, 4).unwrap();
        assert!(a.x.equal(&b.x) && !a.x.equal(&c.x));
        assert!(s.train.subset(0, 1).is_err() && s.train.subset(101, 1).is_err());
        let cfg = DataConfig { train_subset: Some(1000), ..cfg };
        assert!(load(&cfg, 1).unwrap_err().to_string().contains("train_subset"));
    }

    #[test]
    fn idx_subsets_equal_subsets_of_the_full_data() {
        let dir = tempfile::tempdir().unwrap();
        let (n, d) = (50usize, 4usize);
        let pix: Vec<u8> = (0..n * d).map(|i| (i * 7 % 251) as u8).collect();
        let lab: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        for stem in ["train", "t10k"] {
            idx::write_images(&dir.path().join(format!("{stem}-images-idx3-ubyte")), &pix, n, 2, 2).unwrap();
            idx::write_labels(&dir.path().join(format!("{stem}-labels-idx1-ubyte")), &lab).unwrap();
        }
        let full_cfg = DataConfig { dataset: DatasetName::Mnist, data_dir: Some(dir.path().to_path_buf()), ..DataConfig::default() };
        let full = load(&full_cfg, 3).unwrap();
        let sub = load(&DataConfig { train_subset: Some(12), test_subset: Some(5), ..full_cfg.clone() }, 3).unwrap();
        let want = full.train.subset(12, 3).unwrap();
        assert!(sub.train.x.equal(&want.x) && sub.train.y.equal(&want.y));
        assert!(sub.test.x.equal(&full.test.subset(5, 3 ^ 0x7e57).unwrap().x));
        assert!(load(&DataConfig { train_subset: Some(0), ..full_cfg.clone() }, 3).is_err());
        assert!(load(&DataConfig { train_subset: Some(51), ..full_cfg }, 3).unwrap_err().to_string().contains("exceeds"));
    }

    #[test]
    fn real_fashion_mnist_when_installed() {
        let cfg = DataConfig::default();
        if !cfg.resolve_dir().join("train-images-idx3-ubyte.gz").exists() {
            eprintln!("skipped: Fashion-MNIST not installed at {} (apt-get install dataset-fashion-mnist)", cfg.resolve_dir().display());
            return;
        }
        let s = load(&cfg, 0).unwrap();
        assert_eq!((s.train.len(), s.test.len(), s.train.input_dim(), s.train.num_classes), (60000, 10000, 784, 10));
        let mean = s.train.x.mean(Kind::Float).double_value(&[]);
        let std = s.train.x.std(true).double_value(&[]);
        assert!(mean.abs() < 0.01 && (std - 1.0).abs() < 0.02, "normalised: mean {mean} std {std}");
        let counts = s.train.y.bincount::<&Tensor>(None, 10);
        assert_eq!(Vec::<i64>::try_from(counts).unwrap(), vec![6000; 10]);
    }
}
