//! Reading configuration files: every config of widthlab (training runs, GPT runs, sweeps,
//! the uv model) is a serde struct read from TOML or JSON by this one function.
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Reads a `T` from a TOML or JSON file (JSON if the extension is `json`, TOML otherwise).
/// A missing file is [`Error::Io`]; a file that does not parse, or has unknown or ill-typed
/// fields, is [`Error::ConfigParse`] with the parser's message (line and column).
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|reason| Error::ConfigParse { path: path.to_path_buf(), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct C {
        width: i64,
    }

    #[test]
    fn toml_json_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (t, j, bad) = (dir.path().join("c.toml"), dir.path().join("c.json"), dir.path().join("bad.toml"));
        std::fs::write(&t, "width = 3").unwrap();
        std::fs::write(&j, r#"{"width": 4}"#).unwrap();
        std::fs::write(&bad, "depth = 3").unwrap();
        assert_eq!(read_config::<C>(&t).unwrap(), C { width: 3 });
        assert_eq!(read_config::<C>(&j).unwrap(), C { width: 4 });
        let e = read_config::<C>(&bad).unwrap_err();
        assert!(matches!(e, Error::ConfigParse { .. }) && e.to_string().contains("depth"), "{e}");
        assert!(matches!(read_config::<C>(&dir.path().join("none.toml")).unwrap_err(), Error::Io { .. }));
    }
}
