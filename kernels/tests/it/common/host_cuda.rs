//! Runs emitted CUDA C on the host CPU, so that tests can check what the text computes without a
//! GPU.
//!
//! A [`Program`] gathers [`Module`]s (CUDA C source texts) and [`Case`]s (buffers and a sequence
//! of kernel launches on them), and [`Program::run`] compiles all of it as ONE C++ translation
//! unit with the host's C++ compiler, runs it, and returns every case's buffers as they are after
//! its launches. The CUDA built-ins come from `cuda_host_shim.h` (next to this file): blocks run
//! one after another with `__shared__` memory a function-local static, the threads of a block
//! are fibers switched at `__syncthreads()`, a barrier of the block, and the math functions are
//! the C library's, the ones Rust's `f32` and `f64` methods call. The compiler runs with
//! `-ffp-contract=off -fno-fast-math` and no `-march`, so every f32 and f64 operation is rounded
//! once, as in the CPU evaluator, and with `-fno-builtin`, so that it cannot fold a library
//! function of a constant to a value that the library would not return at run time.
//!
//! The threads are fibers, not threads of the operating system, because a barrier of 256 such
//! threads costs about a millisecond on a two-core machine (each must be woken and scheduled),
//! which made a reduction of a thousand blocks take seconds; a fiber switch costs half a
//! microsecond. The fibers run in the order of their index, each until its next barrier, so the
//! interleaving is deterministic.
//!
//! Each module lands in its own namespace with every `extern "C" ` removed, so that many modules
//! with the same entry names share one translation unit (compiling is what takes the time). The
//! program does not depend on the cases: it has one caller per entry point and argument types,
//! and reads the cases (buffers, launch shapes and argument values, exact to the bit) from a
//! binary file next to the generated source, in native byte order, at run time; it writes the
//! buffers after each case's launches to another.
//!
//! A typical use:
//!
//! ```text
//! let Some(cxx) = host_cxx_or_skip("my_test") else { return };
//! let mut program = Program::new();
//! let module = program.module(Module::new(source, &["sched_bias_activation"]));
//! let mut case = Case::new(module);
//! let data = case.buffer(Buffer::F32(values));
//! case.launch("sched_bias_activation", 1, 256, vec![data, ...]);
//! let id = program.case(case);
//! let outputs = program.run(&cxx, "my_test").expect("the program runs");
//! let result = outputs.case(id)[0].as_f32();
//! ```

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The header that emulates the CUDA built-ins on the host.
const SHIM: &str = include_str!("cuda_host_shim.h");

/// The options of every compilation (see the module documentation).
const FLAGS: [&str; 8] = [
    "-std=c++20",
    "-O1",
    // Each entry point is called once, from its caller; inlining it there only costs time.
    "-fno-inline-functions-called-once",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-fno-builtin",
    // The emitted text reads and writes f32 buffers as `float4`, as CUDA allows.
    "-fno-strict-aliasing",
    "-Wno-unknown-pragmas",
];

/// A host C++ compiler: the program to run and the arguments that precede the harness's own.
#[derive(Clone, Debug)]
pub struct HostCxx {
    program: String,
    arguments: Vec<String>,
}

impl HostCxx {
    /// Finds a C++ compiler: the `CXX` environment variable (a command, possibly with arguments),
    /// else `c++`, else `g++`, whichever first answers `--version`. The error says what was tried.
    pub fn find() -> Result<HostCxx, String> {
        let mut candidates = Vec::new();
        if let Some(cxx) = std::env::var_os("CXX") {
            candidates.push(cxx.to_string_lossy().into_owned());
        }
        candidates.extend(["c++".to_string(), "g++".to_string()]);
        let mut tried = Vec::new();
        for candidate in candidates {
            let mut words = candidate.split_whitespace().map(String::from);
            let Some(program) = words.next() else {
                continue;
            };
            let cxx = HostCxx { program, arguments: words.collect() };
            match cxx.command().arg("--version").output() {
                Ok(output) if output.status.success() => return Ok(cxx),
                Ok(output) => tried.push(format!("`{candidate} --version` exited with {}", output.status)),
                Err(e) => tried.push(format!("`{candidate}` cannot be run: {e}")),
            }
        }
        Err(format!("no C++ compiler found ({})", tried.join("; ")))
    }

    /// The compiler's command, with its leading arguments.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.arguments);
        command
    }
}

/// Returns the host C++ compiler, or prints why `test` is skipped and returns `None`. CI sets
/// `SCHED_REQUIRE_HOST_CXX=1`, which makes a missing compiler a failure.
pub fn host_cxx_or_skip(test: &str) -> Option<HostCxx> {
    match HostCxx::find() {
        Ok(cxx) => Some(cxx),
        Err(why) => {
            assert!(
                std::env::var_os("SCHED_REQUIRE_HOST_CXX").is_none(),
                "{test}: {why}, and SCHED_REQUIRE_HOST_CXX is set"
            );
            println!("skipping {test}: {why}");
            None
        }
    }
}

/// A CUDA C module and the entry points that cases may launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    source: String,
    entries: Vec<String>,
}

impl Module {
    /// A module of `source` with the entry points `entries` (its `__global__` functions).
    ///
    /// # Panics
    ///
    /// If the source does not mention some entry point.
    pub fn new(source: impl Into<String>, entries: &[&str]) -> Module {
        let source = source.into();
        for entry in entries {
            assert!(source.contains(&format!(" {entry}(")), "the module has no entry point `{entry}`:\n{source}");
        }
        Module { source, entries: entries.iter().map(|e| e.to_string()).collect() }
    }
}

/// The handle of a module of a [`Program`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModuleId(usize);

/// The handle of a case of a [`Program`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CaseId(usize);

/// The contents of a device buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    F32(Vec<f32>),
    U32(Vec<u32>),
    F64(Vec<f64>),
}

impl Buffer {
    /// The values of an f32 buffer.
    ///
    /// # Panics
    ///
    /// If the buffer holds another type.
    pub fn as_f32(&self) -> &[f32] {
        match self {
            Buffer::F32(values) => values,
            other => panic!("not an f32 buffer: {other:?}"),
        }
    }

    /// The values of a u32 buffer.
    ///
    /// # Panics
    ///
    /// If the buffer holds another type.
    pub fn as_u32(&self) -> &[u32] {
        match self {
            Buffer::U32(values) => values,
            other => panic!("not a u32 buffer: {other:?}"),
        }
    }

    /// The values of an f64 buffer.
    ///
    /// # Panics
    ///
    /// If the buffer holds another type.
    pub fn as_f64(&self) -> &[f64] {
        match self {
            Buffer::F64(values) => values,
            other => panic!("not an f64 buffer: {other:?}"),
        }
    }

    /// The number of elements.
    fn len(&self) -> usize {
        match self {
            Buffer::F32(values) => values.len(),
            Buffer::U32(values) => values.len(),
            Buffer::F64(values) => values.len(),
        }
    }

    /// The number of the element type in the input file (`sched_host::Type` of the shim).
    fn type_code(&self) -> u64 {
        match self {
            Buffer::F32(_) => 0,
            Buffer::U32(_) => 1,
            Buffer::F64(_) => 2,
        }
    }

    /// The size of an element in bytes.
    fn element_size(&self) -> usize {
        match self {
            Buffer::F32(_) | Buffer::U32(_) => 4,
            Buffer::F64(_) => 8,
        }
    }

    /// Appends the type, the length and the values in native byte order, padded to a multiple
    /// of 8 bytes.
    fn write_to(&self, bytes: &mut Vec<u8>) {
        bytes.extend(self.type_code().to_ne_bytes());
        bytes.extend((self.len() as u64).to_ne_bytes());
        match self {
            Buffer::F32(values) => values.iter().for_each(|v| bytes.extend(v.to_ne_bytes())),
            Buffer::U32(values) => values.iter().for_each(|v| bytes.extend(v.to_ne_bytes())),
            Buffer::F64(values) => values.iter().for_each(|v| bytes.extend(v.to_ne_bytes())),
        }
        bytes.resize(bytes.len().next_multiple_of(8), 0);
    }

    /// A buffer of the same type and length as `self` with the values of `bytes`, which holds
    /// exactly that many elements in native byte order.
    fn read_like(&self, bytes: &[u8]) -> Buffer {
        match self {
            Buffer::F32(_) => Buffer::F32(bytes.chunks_exact(4).map(|b| f32::from_ne_bytes(array(b))).collect()),
            Buffer::U32(_) => Buffer::U32(bytes.chunks_exact(4).map(|b| u32::from_ne_bytes(array(b))).collect()),
            Buffer::F64(_) => Buffer::F64(bytes.chunks_exact(8).map(|b| f64::from_ne_bytes(array(b))).collect()),
        }
    }
}

/// The array of a chunk of exactly `N` bytes.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().expect("chunks_exact gives chunks of the element size")
}

/// An argument of a launch, in the order of the entry point's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// A pointer to buffer `k` of the case (see [`Case::buffer`]); the same buffer may be passed
    /// more than once, for an in-place update.
    Buffer(usize),
    F32(f32),
    U32(u32),
    I32(i32),
    U64(u64),
    /// A `double`, passed by value as CUDA passes a double kernel parameter.
    F64(f64),
}

impl Arg {
    /// The C type of the argument in a launch of `case`, which holds its buffers.
    fn c_type(&self, case: &Case) -> &'static str {
        match *self {
            Arg::Buffer(k) => match case.buffers[k] {
                Buffer::F32(_) => "float*",
                Buffer::U32(_) => "unsigned int*",
                Buffer::F64(_) => "double*",
            },
            Arg::F32(_) => "float",
            Arg::U32(_) => "unsigned int",
            Arg::I32(_) => "int",
            Arg::U64(_) => "unsigned long long",
            Arg::F64(_) => "double",
        }
    }

    /// The argument as one word of the input file: a buffer's index, or a scalar's bits.
    fn word(&self) -> u64 {
        match *self {
            Arg::Buffer(k) => k as u64,
            Arg::F32(v) => u64::from(v.to_bits()),
            Arg::U32(v) => u64::from(v),
            Arg::I32(v) => u64::from(v.cast_unsigned()),
            Arg::U64(v) => v,
            Arg::F64(v) => v.to_bits(),
        }
    }
}

/// One launch of an entry point: `grid` blocks of `block` threads, with `args`.
#[derive(Clone, Debug, PartialEq)]
struct Launch {
    entry: String,
    grid: u32,
    block: u32,
    args: Vec<Arg>,
}

/// Buffers and the launches that run on them, in order, as on one CUDA stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    module: ModuleId,
    buffers: Vec<Buffer>,
    launches: Vec<Launch>,
}

impl Case {
    /// A case of launches of entry points of `module`.
    pub fn new(module: ModuleId) -> Case {
        Case { module, buffers: Vec::new(), launches: Vec::new() }
    }

    /// Adds a buffer with initial contents, 16-byte aligned on the host, and returns the argument
    /// that passes a pointer to it.
    pub fn buffer(&mut self, buffer: Buffer) -> Arg {
        self.buffers.push(buffer);
        Arg::Buffer(self.buffers.len() - 1)
    }

    /// Appends a launch of `entry` as `grid` blocks of `block` threads.
    ///
    /// # Panics
    ///
    /// If an argument names a buffer the case does not have yet.
    pub fn launch(&mut self, entry: &str, grid: u32, block: u32, args: Vec<Arg>) {
        for arg in &args {
            if let Arg::Buffer(k) = *arg {
                assert!(k < self.buffers.len(), "the case has no buffer {k}");
            }
        }
        self.launches.push(Launch { entry: entry.to_string(), grid, block, args });
    }
}

/// Modules and the cases that launch their entry points, compiled and run together.
#[derive(Debug, Default)]
pub struct Program {
    modules: Vec<Module>,
    cases: Vec<Case>,
    /// The id of every module by its source text, so that adding a module twice compiles it once.
    ids: HashMap<String, ModuleId>,
}

/// The buffers of every case of a [`Program`] after its launches, and how long the compilation
/// and the run took.
#[derive(Debug)]
pub struct Outputs {
    buffers: Vec<Vec<Buffer>>,
    pub compile: Duration,
    pub execute: Duration,
}

impl Outputs {
    /// The buffers of case `id` after its launches, in the order [`Case::buffer`] added them.
    pub fn case(&self, id: CaseId) -> &[Buffer] {
        &self.buffers[id.0]
    }

    /// The buffer that `buffer` (an [`Arg::Buffer`]) passes in case `case`, after its launches.
    ///
    /// # Panics
    ///
    /// If `buffer` is not a buffer.
    pub fn buffer(&self, case: CaseId, buffer: Arg) -> &Buffer {
        let Arg::Buffer(k) = buffer else { panic!("{buffer:?} is not a buffer") };
        &self.case(case)[k]
    }
}

/// Why a [`Program`] did not run.
#[derive(Debug)]
pub enum HostError {
    /// The working folder or a file in it cannot be written or read.
    Io { path: PathBuf, error: std::io::Error },
    /// The compiler cannot be run, or rejects the program (with its diagnostics).
    Compile { source: PathBuf, log: String },
    /// The program fails (with what it printed).
    Run { status: String, log: String },
    /// The program's output file does not hold the case buffers.
    Output { expected: usize, got: usize },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            HostError::Compile { source, log } => write!(f, "{} does not compile:\n{log}", source.display()),
            HostError::Run { status, log } => write!(f, "the program failed ({status}):\n{log}"),
            HostError::Output { expected, got } => {
                write!(f, "the program wrote {got} bytes of buffers, not {expected}")
            }
        }
    }
}

impl Program {
    /// An empty program.
    pub fn new() -> Program {
        Program::default()
    }

    /// Adds a module, or finds the one with the same source, and returns its id.
    pub fn module(&mut self, module: Module) -> ModuleId {
        if let Some(&id) = self.ids.get(&module.source) {
            let known = &mut self.modules[id.0];
            for entry in module.entries {
                if !known.entries.contains(&entry) {
                    known.entries.push(entry);
                }
            }
            return id;
        }
        let id = ModuleId(self.modules.len());
        self.ids.insert(module.source.clone(), id);
        self.modules.push(module);
        id
    }

    /// Adds a case and returns its id.
    ///
    /// # Panics
    ///
    /// If the case names a module of another program, or launches an entry point its module
    /// does not declare.
    pub fn case(&mut self, case: Case) -> CaseId {
        let module = self.modules.get(case.module.0).expect("the case's module belongs to this program");
        for launch in &case.launches {
            assert!(module.entries.contains(&launch.entry), "the module has no entry point `{}`", launch.entry);
        }
        self.cases.push(case);
        CaseId(self.cases.len() - 1)
    }

    /// Compiles and runs the program, and returns the buffers of every case after its launches.
    ///
    /// It works in the folder `host_cuda/<name>/<process id>/` of the test's target tmp directory
    /// (`CARGO_TARGET_TMPDIR`, `target/tmp/` by default; see [`working_folder`]), which keeps the
    /// source `program.cpp`, the binary `program` and the buffer files `input.bin` and
    /// `output.bin` for inspection. Programs of one process that run at the same time need
    /// different names; two processes (two `cargo test` at once) never share a folder.
    pub fn run(&self, cxx: &HostCxx, name: &str) -> Result<Outputs, HostError> {
        let dir = working_folder(name);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| HostError::Io { path, error }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let (source, binary) = (dir.join("program.cpp"), dir.join("program"));
        let (input, output) = (dir.join("input.bin"), dir.join("output.bin"));
        let (text, callers) = self.source();
        fs::write(&source, text).map_err(io(&source))?;
        fs::write(&input, self.input(&callers)).map_err(io(&input))?;

        let start = Instant::now();
        let compiled =
            cxx.command().args(FLAGS).arg("-o").arg(&binary).arg(&source).output().map_err(|e| HostError::Compile {
                source: source.clone(),
                log: format!("cannot run the compiler: {e}"),
            })?;
        if !compiled.status.success() {
            let log = String::from_utf8_lossy(&compiled.stderr).into_owned();
            return Err(HostError::Compile { source, log });
        }
        let compile = start.elapsed();

        let start = Instant::now();
        let ran = Command::new(&binary)
            .arg(&input)
            .arg(&output)
            .output()
            .map_err(|e| HostError::Run { status: "not started".to_string(), log: e.to_string() })?;
        if !ran.status.success() {
            let log = String::from_utf8_lossy(&ran.stderr).into_owned();
            return Err(HostError::Run { status: ran.status.to_string(), log });
        }
        let execute = start.elapsed();

        let bytes = fs::read(&output).map_err(io(&output))?;
        if bytes.len() != self.buffer_bytes() {
            return Err(HostError::Output { expected: self.buffer_bytes(), got: bytes.len() });
        }
        let mut rest = &bytes[..];
        let mut buffers = Vec::new();
        for case in &self.cases {
            let mut after = Vec::new();
            for buffer in &case.buffers {
                let (head, tail) = rest.split_at(buffer.len() * buffer.element_size());
                after.push(buffer.read_like(head));
                rest = tail;
            }
            buffers.push(after);
        }
        Ok(Outputs { buffers, compile, execute })
    }

    /// Runs the program (see [`Program::run`]), panicking with the compiler's or the program's
    /// message if it fails, and prints how long it took.
    pub fn run_or_panic(&self, cxx: &HostCxx, name: &str) -> Outputs {
        let outputs = self.run(cxx, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{name}: compiled in {:?}, ran in {:?}", outputs.compile, outputs.execute);
        outputs
    }

    /// The size of every buffer of every case, in bytes.
    fn buffer_bytes(&self) -> usize {
        self.cases.iter().flat_map(|case| &case.buffers).map(|b| b.len() * b.element_size()).sum()
    }

    /// The C++ translation unit (the shim, one namespace per module, and one caller per entry
    /// point and argument types that some launch uses), and the index of the caller of every
    /// launch of every case.
    fn source(&self) -> (String, Vec<Vec<usize>>) {
        let mut text = String::from(SHIM);
        for (m, module) in self.modules.iter().enumerate() {
            let body = module.source.replace("extern \"C\" ", "");
            text += &format!("\nnamespace module_{m} {{\n{body}}}  // namespace module_{m}\n");
        }
        let mut callers: HashMap<(usize, &str, Vec<&str>), usize> = HashMap::new();
        let mut indices = Vec::new();
        for case in &self.cases {
            let mut launches = Vec::new();
            for launch in &case.launches {
                let types: Vec<&str> = launch.args.iter().map(|arg| arg.c_type(case)).collect();
                let key = (case.module.0, launch.entry.as_str(), types);
                let next = callers.len();
                let index = *callers.entry(key.clone()).or_insert_with(|| {
                    let (module, entry, types) = &key;
                    text += &format!("\nstatic void call_{next}(const sched_host::Launch& launch) {{\n");
                    text += "    struct Args {\n";
                    for (k, c_type) in types.iter().enumerate() {
                        text += &format!("        {c_type} a{k};\n");
                    }
                    text += "    };\n";
                    let values: Vec<String> = types
                        .iter()
                        .enumerate()
                        .map(|(k, c_type)| match c_type.strip_suffix('*') {
                            Some(element) => format!("launch.pointer<{element}>({k})"),
                            None => format!("launch.scalar<{c_type}>({k})"),
                        })
                        .collect();
                    text += &format!("    const Args args{{{}}};\n", values.join(", "));
                    let args: Vec<String> = (0..types.len()).map(|k| format!("a.a{k}")).collect();
                    text += &format!(
                        "    sched_host::launch(launch.grid, launch.block, [](const void* context) {{\n        \
                         const Args& a = *static_cast<const Args*>(context);\n        \
                         module_{module}::{entry}({});\n    }}, &args);\n}}\n",
                        args.join(", ")
                    );
                    next
                });
                launches.push(index);
            }
            indices.push(launches);
        }
        // The table ends in a null pointer, which no launch names, so that it is never empty.
        let mut names: Vec<String> = (0..callers.len()).map(|index| format!("call_{index}")).collect();
        names.push("nullptr".to_string());
        text += &format!("\nstatic const sched_host::Caller callers[] = {{{}}};\n", names.join(", "));
        text += "\nint main(int argc, char** argv) {\n";
        text += &format!("    return sched_host::run_cases(argc, argv, callers, {});\n}}\n", callers.len());
        (text, indices)
    }

    /// The input file: the cases, their buffers and their launches, as the shim's `run_cases`
    /// reads them, with `callers[c][l]` the caller of launch `l` of case `c`.
    fn input(&self, callers: &[Vec<usize>]) -> Vec<u8> {
        let mut bytes = Vec::new();
        let word = |bytes: &mut Vec<u8>, w: u64| bytes.extend(w.to_ne_bytes());
        word(&mut bytes, self.cases.len() as u64);
        for (case, callers) in self.cases.iter().zip(callers) {
            word(&mut bytes, case.buffers.len() as u64);
            for buffer in &case.buffers {
                buffer.write_to(&mut bytes);
            }
            word(&mut bytes, case.launches.len() as u64);
            for (launch, &caller) in case.launches.iter().zip(callers) {
                for w in [caller as u64, u64::from(launch.grid), u64::from(launch.block), launch.args.len() as u64] {
                    word(&mut bytes, w);
                }
                for arg in &launch.args {
                    word(&mut bytes, arg.word());
                }
            }
        }
        bytes
    }
}

/// The folder in which this process runs the programs named `name`: `host_cuda/<name>/<process
/// id>/` under the test's target tmp directory. The folders of the same name that processes which
/// have ended left behind are removed first (where `/proc` tells which processes run), so that a
/// program's files stay for inspection until the next run of its test, and do not pile up.
fn working_folder(name: &str) -> PathBuf {
    let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("host_cuda").join(name);
    let own = std::process::id();
    if Path::new("/proc/self").exists()
        && let Ok(entries) = fs::read_dir(&parent)
    {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if pid != own && !Path::new("/proc").join(pid.to_string()).exists() {
                // At best: another process may be removing it too.
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    parent.join(own.to_string())
}

/// The bits written over every f32 output buffer before a launch, and into the padding after
/// its elements, which no launch may touch: a signalling NaN, which no arithmetic produces.
pub const SENTINEL: u32 = 0x7fa5_5a5a;

/// Elements of padding after the elements of every f32 output buffer.
pub const PADDING: usize = 9;

/// An f32 output buffer of `len` elements and its padding, all [`SENTINEL`].
pub fn sentinel(len: usize) -> Buffer {
    Buffer::F32(vec![f32::from_bits(SENTINEL); len + PADDING])
}

/// Compares values bit for bit, except that any NaN matches any NaN: which of two NaN operands
/// x86 returns (`a + b` with `a = NaN` and `b = -NaN`, say) depends on the order in which the
/// compiler puts them in the instruction, which IEEE 754 leaves open. It is not a property of the
/// emitted text: the CPU evaluator's own loops give one or the other depending on whether LLVM
/// vectorizes them, and a GPU returns its canonical NaN. Returns how many NaNs differ in their
/// bits.
pub fn compare(got: &[f32], expected: &[f32]) -> Result<usize, String> {
    if got.len() != expected.len() {
        return Err(format!("{} values, expected {}", got.len(), expected.len()));
    }
    let differs = |(g, e): (&f32, &f32)| g.to_bits() != e.to_bits() && !(g.is_nan() && e.is_nan());
    if let Some(i) = got.iter().zip(expected).position(differs) {
        let mismatches = got.iter().zip(expected).filter(|&pair| differs(pair)).count();
        return Err(format!(
            "element {i} is {:?} ({:#010x}), expected {:?} ({:#010x}); {mismatches} of {} elements differ",
            got[i],
            got[i].to_bits(),
            expected[i],
            expected[i].to_bits(),
            got.len()
        ));
    }
    Ok(got.iter().zip(expected).filter(|(g, e)| g.to_bits() != e.to_bits()).count())
}

/// Checks an output buffer of [`sentinel`] after its launch: `expected` in its first elements
/// (see [`compare`]), then the untouched padding; panics with `what` if not. Returns how many
/// NaNs differ in their bits.
pub fn check_output(got: &[f32], expected: &[f32], what: &str) -> usize {
    let (values, padding) = got.split_at(expected.len());
    let nans = compare(values, expected).unwrap_or_else(|e| panic!("{what}: {e}"));
    if let Some(i) = padding.iter().position(|v| v.to_bits() != SENTINEL) {
        panic!("{what}: the padding element {} after the output is overwritten", expected.len() + i);
    }
    nans
}
