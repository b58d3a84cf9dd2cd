//! Export of sweep records for pandas: CSV (one row per run, one column per coordinate and
//! metric; empty cells for missing or non-finite values) and JSON (the full records).
use std::collections::BTreeSet;
use std::path::Path;

use super::plain;
use super::runner::RunRecord;
use crate::train::Outcome;
use crate::{Error, Result};

/// The metric columns after the coordinates.
pub const METRIC_COLUMNS: [&str; 11] =
    ["outcome", "diverged_step", "steps", "train_loss", "train_acc", "test_loss", "test_acc", "final_batch_loss", "seconds", "threads", "key"];

/// Records as CSV text: `sweep`, the union of all coordinates (sorted), then [`METRIC_COLUMNS`].
pub fn to_csv(records: &[RunRecord]) -> Result<String> {
    let coords: BTreeSet<&String> = records.iter().flat_map(|r| r.coords.keys()).collect();
    let mut w = csv::Writer::from_writer(vec![]);
    let mut header = vec!["sweep".to_string()];
    header.extend(coords.iter().map(|c| c.to_string()));
    header.extend(METRIC_COLUMNS.iter().map(|c| c.to_string()));
    let err = |e: csv::Error| Error::Serde(format!("csv: {e}"));
    w.write_record(&header).map_err(err)?;
    let num = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v}"));
    for r in records {
        let mut row = vec![r.sweep.clone()];
        for c in &coords {
            row.push(r.coords.get(*c).filter(|v| !v.is_null()).map_or(String::new(), plain));
        }
        let o = &r.output;
        let (outcome, step) = match &o.outcome {
            Outcome::Completed => ("completed", String::new()),
            Outcome::Diverged { step, .. } => ("diverged", step.to_string()),
        };
        row.extend([
            outcome.to_string(),
            step,
            o.steps.to_string(),
            num(o.train_loss),
            num(o.train_acc),
            num(o.test_loss),
            num(o.test_acc),
            num(o.final_batch_loss),
            format!("{}", r.seconds),
            r.threads.to_string(),
            r.key.clone(),
        ]);
        w.write_record(&row).map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| Error::Serde(format!("csv: {e}")))?;
    String::from_utf8(bytes).map_err(|e| Error::Serde(e.to_string()))
}

/// The export formats, by file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    /// The format an output path names: `.csv` or `.json`; anything else is an error (checked
    /// before the store is read).
    pub fn of(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => Ok(Format::Csv),
            Some("json") => Ok(Format::Json),
            _ => Err(Error::config(format!("export {}: the file name must end in .csv or .json", path.display()))),
        }
    }
}

/// Writes CSV (`.csv`) or JSON (`.json`) to `path`, atomically.
pub fn write(records: &[RunRecord], path: &Path) -> Result<()> {
    let text = match Format::of(path)? {
        Format::Csv => to_csv(records)?,
        Format::Json => serde_json::to_string_pretty(records)?,
    };
    crate::files::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::runner::{RunKind, RunOutput};

    #[test]
    fn csv_has_one_row_per_run_and_empty_cells_for_missing_values() {
        let rec = |key: &str, width: i64, acc: Option<f64>, outcome: Outcome| RunRecord {
            key: key.into(),
            sweep: "s".into(),
            kind: RunKind::Mlp,
            coords: [("width".to_string(), serde_json::Value::from(width)), ("loss".to_string(), serde_json::Value::from("ce"))].into(),
            config: serde_json::Value::Null,
            output: RunOutput { outcome, steps: 5, train_loss: Some(0.25), train_acc: acc, test_loss: None, test_acc: None, final_batch_loss: None, loss_curve: vec![] },
            seconds: 1.5,
            threads: 1,
            owner: "h:1".into(),
            finished_at: 0.0,
        };
        let csv = to_csv(&[rec("a", 64, Some(0.5), Outcome::Completed), rec("b", 128, None, Outcome::Diverged { step: 3, reason: "x".into() })]).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "sweep,loss,width,outcome,diverged_step,steps,train_loss,train_acc,test_loss,test_acc,final_batch_loss,seconds,threads,key");
        assert_eq!(lines[1], "s,ce,64,completed,,5,0.25,0.5,,,,1.5,1,a");
        assert_eq!(lines[2], "s,ce,128,diverged,3,5,0.25,,,,,1.5,1,b");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/r.json");
        write(&[rec("a", 64, Some(0.5), Outcome::Completed)], &p).unwrap();
        let back: Vec<RunRecord> = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back.len(), 1);
        // only .csv and .json: anything else is refused, nothing is written
        let txt = dir.path().join("out.txt");
        assert!(write(&[], &txt).unwrap_err().to_string().contains(".csv or .json"));
        assert!(!txt.exists());
    }
}
