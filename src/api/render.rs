//! Rendering diagnostics for people (the library crates only produce them as data).

use miette::{GraphicalReportHandler, GraphicalTheme};
use sched_lang::{Diagnostic, SourceMap};

/// How diagnostics are drawn: miette's graphical report, 100 columns wide, with or without colour.
pub struct Style {
    handler: GraphicalReportHandler,
}

impl Style {
    /// The style with colour when `color`; whether a terminal wants it is the caller's choice.
    pub fn new(color: bool) -> Style {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        Style { handler: GraphicalReportHandler::new_themed(theme).with_width(100) }
    }

    /// The fixed style of golden tests: no colour, 100 columns.
    pub fn plain() -> Style {
        Style::new(false)
    }

    /// Renders a compiler error like a front-end diagnostic.
    pub fn render_compile_error(
        &self,
        error: &sched_compiler::diagnostics::CompileError,
        sources: &SourceMap,
    ) -> String {
        let report = sched_lang::diagnostics::external_to_miette(
            error.code,
            &error.message,
            error.span,
            &error.label,
            &error.help,
            sources,
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.handler.render_report(&mut out, &report);
        out
    }

    pub fn render(&self, diagnostic: &Diagnostic, sources: &SourceMap) -> String {
        let mut out = String::new();
        let report = diagnostic.to_miette(sources);
        // Writing into a String cannot fail.
        let _ = self.handler.render_report(&mut out, &report);
        out
    }
}
