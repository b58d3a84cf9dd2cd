//! Reading configuration files: every config of widthlab (training runs, GPT runs, sweeps,
//! the uv model) is a serde struct read from TOML or JSON by this one function.
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Reads a `T` from a TOML or JSON file (JSON if the extension is `json`, TOML otherwise).
/// A missing file is [`Error::Io`]; a file that does not parse, has unknown or ill-typed
/// fields, or sets nothing at all (empty, only comments, `{}`: most likely the wrong file, and
/// it would silently run every default) is [`Error::ConfigParse`] with the parser's message
/// (line and column).
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let fail = |reason: String| Error::ConfigParse { path: path.to_path_buf(), reason };
    let empty = || fail("the file sets nothing (an empty config would silently run every default)".into());
    if path.extension().is_some_and(|e| e == "json") {
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        if v.as_object().is_some_and(|m| m.is_empty()) {
            return Err(empty());
        }
        serde_json::from_value(v).map_err(|e| fail(e.to_string()))
    } else {
        let t: toml::Table = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        if t.is_empty() {
            return Err(empty());
        }
        toml::from_str(&text).map_err(|e| fail(e.to_string()))
    }
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
        // a config that sets nothing is refused, not run with every default
        #[derive(Debug, serde::Deserialize)]
        #[serde(default)]
        #[allow(dead_code)]
        struct D {
            width: i64,
        }
        impl Default for D {
            fn default() -> Self {
                D { width: 256 }
            }
        }
        for (name, text) in [("e.toml", ""), ("c.toml", "# only a comment\n\n"), ("e.json", "{}")] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let e = read_config::<D>(&p).unwrap_err();
            assert!(matches!(e, Error::ConfigParse { .. }) && e.to_string().contains("sets nothing"), "{name}: {e}");
        }
    }
}
