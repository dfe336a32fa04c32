//! Which folder is the workspace, found the way cargo finds its manifest:
//! `-C DIR`, else `RAGMAP_HOME`, else the nearest folder from the current one
//! upwards that holds `config.toml` (or both `corpus/` and `index/`), else the
//! current folder.

use std::path::{Path, PathBuf};

use super::CONFIG_FILE;

/// How the workspace was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Flag,
    Env,
    /// A folder at or above the current one with config.toml or corpus/ + index/.
    Upwards,
    /// Nothing marked one: the current folder, with the defaults.
    CurrentDir,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Found::Flag => "from -C",
            Found::Env => "from RAGMAP_HOME",
            Found::Upwards => "the nearest folder upwards holding config.toml or corpus/ + index/",
            Found::CurrentDir => {
                "the current folder: none upwards holds config.toml or corpus/ + index/"
            }
        })
    }
}

/// The workspace for `-C` (`flag`), `RAGMAP_HOME` (`env`) and the current
/// folder `cwd`.
pub fn find_workspace(flag: Option<&Path>, env: Option<&str>, cwd: &Path) -> (PathBuf, Found) {
    if let Some(dir) = flag {
        return (dir.to_path_buf(), Found::Flag);
    }
    if let Some(dir) = env.filter(|v| !v.trim().is_empty()) {
        return (PathBuf::from(dir), Found::Env);
    }
    for dir in cwd.ancestors() {
        let marked = dir.join(CONFIG_FILE).is_file()
            || (dir.join("corpus").is_dir() && dir.join("index").is_dir());
        if marked {
            return (dir.to_path_buf(), Found::Upwards);
        }
    }
    (cwd.to_path_buf(), Found::CurrentDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_then_env_then_nearest_marked_folder_then_cwd() {
        let root = tempfile::tempdir().unwrap();
        let ws = root.path().join("ws");
        let deep = ws.join("corpus/notes/deep");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(ws.join(CONFIG_FILE), "").unwrap();
        let other = root.path().join("other");

        assert_eq!(
            find_workspace(Some(&other), Some("/env"), &deep),
            (other.clone(), Found::Flag)
        );
        assert_eq!(
            find_workspace(None, Some("/env"), &deep),
            (PathBuf::from("/env"), Found::Env)
        );
        assert_eq!(
            find_workspace(None, Some(" "), &deep),
            (ws.clone(), Found::Upwards)
        );
        assert_eq!(
            find_workspace(None, None, &ws),
            (ws.clone(), Found::Upwards)
        );

        // corpus/ and index/ without config.toml mark one too; corpus/ alone does not.
        let bare = root.path().join("bare");
        std::fs::create_dir_all(bare.join("corpus/sub")).unwrap();
        let sub = bare.join("corpus/sub");
        let (found, how) = find_workspace(None, None, &sub);
        assert!(found != bare, "{found:?} {how:?}");
        std::fs::create_dir_all(bare.join("index")).unwrap();
        assert_eq!(find_workspace(None, None, &sub), (bare, Found::Upwards));
    }
}
