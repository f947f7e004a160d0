//! Finding CUDA's libraries at run time. The driver (`libcuda`) comes with
//! the GPU's driver install; cuBLAS and NVRTC may come from the system or
//! from PyPI's `nvidia-*` wheels (the way PyTorch installs them). Libraries
//! found in a wheel are loaded by full path first, so that the loader finds
//! them by name when cudarc asks for them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The libraries the executor needs besides the driver, by file-name stem.
const WANTED: [&str; 4] = ["libnvrtc.so", "libcublasLt.so", "libcublas.so", "libcudnn.so"];

/// Folders to search: `FLUMEN_CUDA_LIBS` (colon-separated), then the `lib`
/// folders of a Python `nvidia` package.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("FLUMEN_CUDA_LIBS").map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    for python in ["python3", "python"] {
        let out = std::process::Command::new(python)
            .args(["-c", "import nvidia, sys; print('\\n'.join(nvidia.__path__))"])
            .stderr(std::process::Stdio::null())
            .output();
        let Ok(out) = out else { continue };
        if !out.status.success() {
            continue;
        }
        for root in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(entries) = std::fs::read_dir(root) else { continue };
            for e in entries.flatten() {
                let lib = e.path().join("lib");
                if lib.is_dir() {
                    dirs.push(lib);
                }
            }
        }
        break;
    }
    dirs
}

/// `dir`'s file for `stem` (`libnvrtc.so.13` before `.12`; never a `-builtins`).
fn find_in(dir: &Path, stem: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == stem || n.starts_with(&format!("{stem}.")))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Loads the wanted libraries found in the search folders, once per
/// process; returns the files loaded (for messages).
pub fn preload() -> &'static [PathBuf] {
    static LOADED: OnceLock<Vec<PathBuf>> = OnceLock::new();
    LOADED.get_or_init(|| {
        let dirs = search_dirs();
        let mut loaded = Vec::new();
        for stem in WANTED {
            let Some(file) = dirs.iter().find_map(|d| find_in(d, stem)) else { continue };
            // SAFETY: loading a CUDA library runs its initialisers, which
            // have no preconditions; RTLD_GLOBAL lets the later load by
            // name find this copy. The handle is kept for the process's life.
            let lib = unsafe {
                libloading::os::unix::Library::open(
                    Some(&file),
                    libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                )
            };
            match lib {
                Ok(lib) => {
                    std::mem::forget(lib);
                    loaded.push(file);
                }
                Err(e) => tracing::debug!("cannot load {}: {e}", file.display()),
            }
        }
        loaded
    })
}
