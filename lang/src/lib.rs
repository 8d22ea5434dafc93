//! The `.sched` language front end: parsing, name resolution, type checking and diagnostics.
//!
//! ```
//! let analysis = sched_lang::analyze("demo.sched", br#"
//!     schedule sample(net: model<eps>, steps: int = 10) {
//!         let x = gaussian()
//!         for t, s in grid(1 -> 0, steps) { refine x from t to s by ddim() }
//!         emit x
//!     }
//! "#);
//! assert!(analysis.diagnostics.is_empty());
//! let program = analysis.program.expect("the program checks");
//! assert_eq!(program.user_schedules().count(), 1);
//! ```

pub mod ast;
pub mod builtins;
pub mod check;
pub mod diagnostics;
pub mod nfe;
pub mod parse;
pub mod prelude;
pub mod source;
pub mod types;

pub use check::Program;
pub use diagnostics::{Code, Diagnostic, Severity};
pub use source::{FileId, SourceMap, Span};

/// Everything the front end learned about one file.
#[derive(Debug)]
pub struct Analysis {
    /// The user's file and the prelude, for rendering diagnostics.
    pub sources: SourceMap,
    /// Errors and warnings, in source order.
    pub diagnostics: Vec<Diagnostic>,
    /// The checked program, present when there are no errors (warnings allowed).
    pub program: Option<Program>,
}

impl Analysis {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// One prelude file parsed, with the id it was parsed under.
type ParsedPrelude = (FileId, Result<ast::SourceFile, Vec<Diagnostic>>);

/// The prelude's files parsed once per process, with the ids they get in every analysis: the
/// main file is file 0 and the prelude's files follow it in order.
fn prelude_parse() -> &'static [ParsedPrelude] {
    static PARSED: std::sync::OnceLock<Vec<ParsedPrelude>> = std::sync::OnceLock::new();
    PARSED.get_or_init(|| {
        prelude::FILES
            .iter()
            .enumerate()
            .map(|(index, (_, text))| {
                let id = FileId(index as u32 + 1);
                (id, parse::parse(id, text))
            })
            .collect()
    })
}

/// Parses and checks one `.sched` file given as raw bytes (which need not be valid UTF-8).
pub fn analyze(name: &str, bytes: &[u8]) -> Analysis {
    let mut sources = SourceMap::new();
    let text = match parse::decode(FileId(0), bytes) {
        Ok(text) => text,
        Err(diagnostic) => {
            // Show the file with invalid bytes replaced; the prefix up to the span is unchanged.
            let shown = if diagnostic.code == Code::NotUtf8 {
                String::from_utf8_lossy(bytes).into_owned()
            } else {
                String::new()
            };
            sources.add(name, shown, false);
            return Analysis { sources, diagnostics: vec![diagnostic], program: None };
        }
    };
    let main = sources.add(name, text, false);
    let parsed_main = parse::parse(main, text);
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    match parsed_main {
        Ok(file) => files.push(file),
        Err(errors) => {
            return Analysis { sources, diagnostics: errors, program: None };
        }
    }
    let parsed_prelude = prelude_parse();
    for (index, (prelude_name, prelude_text)) in prelude::FILES.iter().enumerate() {
        let id = sources.add(*prelude_name, *prelude_text, true);
        let parsed = match parsed_prelude.get(index) {
            Some((cached_id, parsed)) if *cached_id == id => parsed.clone(),
            _ => parse::parse(id, prelude_text),
        };
        match parsed {
            Ok(file) => files.push(file),
            Err(errors) => diagnostics.extend(errors),
        }
    }
    let (program, mut found) = check::Checker::new(sources.clone(), files, main).run();
    diagnostics.append(&mut found);
    diagnostics.sort_by_key(|d| {
        let span = d.primary_span();
        (span.file, span.start, span.end)
    });
    let program = (!diagnostics.iter().any(Diagnostic::is_error)).then_some(program);
    Analysis { sources, diagnostics, program }
}
