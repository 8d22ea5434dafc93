//! Compilation of sched's CUDA C (see [`crate::cuda`]) to PTX with NVRTC, and a cache of the PTX.
//!
//! NVRTC is reached through cudarc's dynamic loading: nothing CUDA is needed to build sched, and
//! `libnvrtc` is opened the first time a kernel is compiled. cudarc panics when a function of a
//! missing library is called, so every entry point here first probes for the library
//! ([`available`]) and returns [`NvrtcError::Unavailable`] instead. The lower-level
//! `cudarc::nvrtc::result` functions are used rather than `compile_ptx_with_opts`, because the
//! latter panics on a source with a NUL byte and on some NVRTC failures.
//!
//! Every kernel is compiled with the same options (see [`compile_ptx`]), which make NVRTC's f32
//! arithmetic that of the kernel specification: no contraction into multiply-adds, correctly
//! rounded division and square root, and subnormals kept.

use std::collections::HashMap;
use std::ffi::{CString, OsString, c_char};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::nvrtc::{result, sys};
use thiserror::Error;

/// Why CUDA C could not be compiled.
#[derive(Debug, Error)]
pub enum NvrtcError {
    /// libnvrtc could not be loaded.
    #[error(
        "libnvrtc (the CUDA runtime compiler) could not be loaded: install the `nvidia-cuda-nvrtc` wheel \
         (13.0.x, `pip install 'nvidia-cuda-nvrtc==13.0.*'`) and add its `nvidia/cu13/lib` folder to \
         LD_LIBRARY_PATH, or install the CUDA toolkit"
    )]
    Unavailable,
    /// The architecture is not a name like `sm_90` or `compute_90`.
    #[error("`{arch}` is not a GPU architecture name like `sm_90`")]
    Arch { arch: String },
    /// NVRTC rejected the source (or the options); `log` is its compile log.
    #[error("NVRTC cannot compile the kernel:\n{log}")]
    Compile { log: String },
    /// An NVRTC call other than the compilation itself failed.
    #[error("NVRTC failed: {call} returned {code}")]
    Nvrtc { call: &'static str, code: String },
    /// A compiled kernel cannot be written to the on-disk cache.
    #[error("cannot write the PTX cache file {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether libnvrtc can be loaded. The probe runs once per process.
pub fn available() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        // SAFETY: the probe only opens and closes the library by its standard names, which runs
        // NVRTC's own initialisers and nothing of ours; it has no precondition.
        unsafe { sys::is_culib_present() }
    })
}

/// Checks that `arch` is a non-empty ASCII name of letters, digits and underscores that starts
/// with `sm_` or `compute_`, so it is safe in an NVRTC option and a file name.
fn check_arch(arch: &str) -> Result<(), NvrtcError> {
    let well_formed = (arch.starts_with("sm_") || arch.starts_with("compute_"))
        && arch.len() <= 32
        && arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if well_formed { Ok(()) } else { Err(NvrtcError::Arch { arch: arch.to_string() }) }
}

/// The options of every sched kernel for `arch` (a checked architecture name).
///
/// All six are accepted by NVRTC 13.0: `--fmad=false` forbids contracting a multiply and an add
/// into one rounding, `--prec-div=true` and `--prec-sqrt=true` make `/` and `sqrtf` correctly
/// rounded, and `--ftz=false` keeps subnormal inputs and results, as the specification requires.
fn options(arch: &str) -> [String; 6] {
    [
        format!("--gpu-architecture={arch}"),
        "--fmad=false".to_string(),
        "--prec-div=true".to_string(),
        "--prec-sqrt=true".to_string(),
        "--ftz=false".to_string(),
        "--std=c++17".to_string(),
    ]
}

/// Converts a NUL-terminated buffer that NVRTC filled into a string, dropping the terminator.
fn text(buffer: &[c_char]) -> String {
    // `c_char` is a byte; the cast only reinterprets its sign.
    let bytes: Vec<u8> = buffer.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An NVRTC program, destroyed when dropped.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by `create_program` and is destroyed only here. A
        // failure to destroy it can only leak it, so the result is ignored.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

/// The NVRTC version, asked once per process; the library must be available.
fn version() -> Result<(i32, i32), NvrtcError> {
    static VERSION: OnceLock<Result<(i32, i32), String>> = OnceLock::new();
    let version = VERSION.get_or_init(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: the callers check that the library is available, and both pointers are valid
        // for writes of one `c_int`.
        let status = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
        status.result().map(|()| (major, minor)).map_err(|e| format!("{:?}", e.0))
    });
    version.clone().map_err(|code| NvrtcError::Nvrtc { call: "nvrtcVersion", code })
}

/// Compiles one CUDA C module to PTX for `arch` (like `"sm_90"`).
///
/// The options are those of every sched kernel: `--gpu-architecture=<arch>`, `--fmad=false`,
/// `--prec-div=true`, `--prec-sqrt=true`, `--ftz=false` and `--std=c++17`. A missing libnvrtc is
/// [`NvrtcError::Unavailable`], never a panic; a source NVRTC rejects is
/// [`NvrtcError::Compile`] with its log.
pub fn compile_ptx(source: &str, arch: &str) -> Result<String, NvrtcError> {
    check_arch(arch)?;
    if !available() {
        return Err(NvrtcError::Unavailable);
    }
    let source = CString::new(source).map_err(|e| NvrtcError::Compile {
        log: format!("the source contains a NUL byte at offset {}", e.nul_position()),
    })?;
    // NVRTC may keep pointing into `source`, which is declared first and so dropped after
    // `program`.
    let program = Program(
        result::create_program(&source, None)
            .map_err(|e| NvrtcError::Nvrtc { call: "nvrtcCreateProgram", code: format!("{:?}", e.0) })?,
    );
    // SAFETY: `program` was created above and is destroyed only when it is dropped, after this
    // function's last use of it. The options contain no NUL byte (the architecture is checked).
    if let Err(error) = unsafe { result::compile_program(program.0, &options(arch)) } {
        // SAFETY: as above.
        let log = unsafe { result::get_program_log(program.0) }.map(|log| text(&log)).unwrap_or_default();
        let log = if log.trim().is_empty() { format!("{:?} (no log)", error.0) } else { log };
        return Err(NvrtcError::Compile { log });
    }
    // SAFETY: as above; the program compiled successfully.
    let ptx = unsafe { result::get_ptx(program.0) }
        .map_err(|e| NvrtcError::Nvrtc { call: "nvrtcGetPTX", code: format!("{:?}", e.0) })?;
    Ok(text(&ptx))
}

/// The 64-bit FNV-1a hash of `parts`, each followed by a zero byte so that the boundaries count.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.iter().chain(&[0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The first line of an on-disk cache entry: the key and the FNV-1a hash of the PTX after it.
/// It is a PTX comment, so the file is still valid PTX.
fn entry_header(key: u64, ptx: &str) -> String {
    format!("// sched PTX cache entry {key:016x} {:016x}\n", fnv1a(&[ptx.as_bytes()]))
}

/// Reads the cache entry at `path` for `key`, or `None` if it is missing, unreadable, truncated
/// or of another key.
fn read_entry(path: &Path, key: u64) -> Option<Arc<str>> {
    let contents = fs::read_to_string(path).ok()?;
    let (header, ptx) = contents.split_once('\n')?;
    (entry_header(key, ptx).strip_suffix('\n') == Some(header)).then(|| Arc::from(ptx))
}

/// Distinguishes the temporary files of one process's concurrent cache writes.
static TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// Writes a cache entry to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees a partial entry.
fn write_entry(path: &Path, key: u64, ptx: &str) -> Result<(), NvrtcError> {
    let failure = |source| NvrtcError::Cache { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(failure)?;
    }
    let temporary =
        path.with_extension(format!("ptx.{}.{}.tmp", std::process::id(), TEMPORARY.fetch_add(1, Ordering::Relaxed)));
    let written = fs::write(&temporary, entry_header(key, ptx) + ptx).and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        // The temporary file may not exist; there is nothing more to clean up either way.
        let _ = fs::remove_file(&temporary);
    }
    written.map_err(failure)
}

/// A cache of compiled PTX, in memory and optionally on disk.
///
/// An entry is keyed by a stable 64-bit FNV-1a hash of the architecture, the NVRTC version, the
/// compile options and the source, so a new NVRTC or a changed option never reuses stale PTX. On
/// disk an entry is the file `<hash:016x>-<arch>.ptx`: a header comment with the key and a hash of
/// the PTX, then the PTX. A missing, unreadable or corrupt file is recompiled and rewritten.
///
/// The cache is thread-safe; two threads asking for the same new kernel at once may both compile
/// it, with the same result.
pub struct PtxCache {
    directory: Option<PathBuf>,
    entries: Mutex<HashMap<u64, Arc<str>>>,
    compilations: AtomicU64,
}

impl fmt::Debug for PtxCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PtxCache")
            .field("directory", &self.directory)
            .field("compilations", &self.compilations())
            .finish_non_exhaustive()
    }
}

impl PtxCache {
    /// A cache that lives only as long as the value.
    pub fn in_memory() -> PtxCache {
        PtxCache { directory: None, entries: Mutex::new(HashMap::new()), compilations: AtomicU64::new(0) }
    }

    /// A cache that also keeps every entry in `dir`, created when the first entry is written.
    pub fn with_directory(dir: PathBuf) -> PtxCache {
        PtxCache { directory: Some(dir), ..PtxCache::in_memory() }
    }

    /// The default on-disk location: `$SCHED_CACHE_DIR`, else `$XDG_CACHE_HOME/sched/ptx`, else
    /// `$HOME/.cache/sched/ptx`; `None` if none of them is set (an empty variable counts as
    /// unset).
    pub fn default_directory() -> Option<PathBuf> {
        directory_from(|name| std::env::var_os(name))
    }

    /// Returns the PTX of `source` for `arch`, compiling it with [`compile_ptx`] unless it is in
    /// memory or on disk. A failure to write a new entry to disk is an error.
    pub fn get_or_compile(&self, source: &str, arch: &str) -> Result<Arc<str>, NvrtcError> {
        check_arch(arch)?;
        if !available() {
            return Err(NvrtcError::Unavailable);
        }
        let (major, minor) = version()?;
        let options = options(arch);
        let mut parts: Vec<&[u8]> = vec![b"sched-ptx", arch.as_bytes()];
        let (major, minor) = (major.to_le_bytes(), minor.to_le_bytes());
        parts.extend([&major[..], &minor[..]]);
        parts.extend(options.iter().map(|option| option.as_bytes()));
        parts.push(source.as_bytes());
        let key = fnv1a(&parts);
        if let Some(ptx) = self.entries().get(&key) {
            return Ok(Arc::clone(ptx));
        }
        let path = self.directory.as_ref().map(|dir| dir.join(format!("{key:016x}-{arch}.ptx")));
        if let Some(ptx) = path.as_deref().and_then(|path| read_entry(path, key)) {
            self.entries().insert(key, Arc::clone(&ptx));
            return Ok(ptx);
        }
        let ptx: Arc<str> = Arc::from(compile_ptx(source, arch)?);
        self.compilations.fetch_add(1, Ordering::Relaxed);
        self.entries().insert(key, Arc::clone(&ptx));
        if let Some(path) = &path {
            write_entry(path, key, &ptx)?;
        }
        Ok(ptx)
    }

    /// How many NVRTC compilations this cache has run.
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// The in-memory entries. A panic while the lock was held cannot leave the map inconsistent
    /// (every update is one insertion), so a poisoned lock is used as is.
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<str>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`PtxCache::default_directory`] with the environment variables read by `var`.
fn directory_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let path = |name: &str| var(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    path("SCHED_CACHE_DIR")
        .or_else(|| path("XDG_CACHE_HOME").map(|dir| dir.join("sched").join("ptx")))
        .or_else(|| path("HOME").map(|dir| dir.join(".cache").join("sched").join("ptx")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks variables up in a fixed list instead of the environment.
    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, String)> = vars.iter().map(|&(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn the_default_directory_follows_the_environment_in_order() {
        let all = [("SCHED_CACHE_DIR", "/a"), ("XDG_CACHE_HOME", "/b"), ("HOME", "/c")];
        assert_eq!(directory_from(lookup(&all)), Some(PathBuf::from("/a")));
        assert_eq!(directory_from(lookup(&all[1..])), Some(PathBuf::from("/b/sched/ptx")));
        assert_eq!(directory_from(lookup(&all[2..])), Some(PathBuf::from("/c/.cache/sched/ptx")));
        let home = Some(PathBuf::from("/c/.cache/sched/ptx"));
        assert_eq!(directory_from(lookup(&[("SCHED_CACHE_DIR", ""), ("HOME", "/c")])), home);
        assert_eq!(directory_from(lookup(&[])), None);
    }

    #[test]
    fn architecture_names_are_checked() {
        for arch in ["sm_90", "sm_90a", "compute_120", "sm_100f"] {
            assert!(check_arch(arch).is_ok(), "{arch}");
        }
        for arch in ["", "90", "sm-90", "sm_90 --fmad=true", "sm_90\0", "../sm_90", "gfx90a"] {
            assert!(matches!(check_arch(arch), Err(NvrtcError::Arch { .. })), "{arch:?}");
        }
    }

    #[test]
    fn cache_entries_detect_truncation_and_other_keys() {
        let dir = std::env::temp_dir().join(format!("sched-ptx-entry-{}", std::process::id()));
        let path = dir.join("entry.ptx");
        write_entry(&path, 7, ".version 9.0\n.target sm_90\n").expect("the temporary folder is writable");
        assert_eq!(read_entry(&path, 7).as_deref(), Some(".version 9.0\n.target sm_90\n"));
        assert_eq!(read_entry(&path, 8), None);
        let contents = fs::read_to_string(&path).expect("the entry was written");
        fs::write(&path, &contents[..contents.len() - 3]).expect("the temporary folder is writable");
        assert_eq!(read_entry(&path, 7), None);
        fs::remove_dir_all(&dir).expect("the temporary folder can be removed");
    }
}
