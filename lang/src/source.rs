//! Source files and byte spans.

use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A byte range `[start, end)` in one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        // Files are capped at `MAX_SOURCE_BYTES` (< 4 GiB) before parsing, so offsets fit in u32.
        Span { file, start: start as u32, end: end as u32 }
    }

    /// The smallest span covering both (which must be in the same file).
    pub fn to(self, other: Span) -> Span {
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// The largest file the front end accepts, in bytes. Larger inputs get a diagnostic instead of a
/// parse, so that spans fit in `u32` and no input can make the parser run for minutes.
pub const MAX_SOURCE_BYTES: usize = 8 * 1024 * 1024;

/// One source text and the name it is reported under.
#[derive(Clone, Debug)]
pub struct SourceText {
    pub name: String,
    pub text: Arc<str>,
    /// True for the built-in prelude files.
    pub is_prelude: bool,
}

/// Every source text of a program: the user's files and the prelude.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceText>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<Arc<str>>, is_prelude: bool) -> FileId {
        let id = FileId(self.files.len() as u32);
        self.files.push(SourceText { name: name.into(), text: text.into(), is_prelude });
        id
    }

    pub fn get(&self, id: FileId) -> &SourceText {
        &self.files[id.0 as usize]
    }

    /// The text a span covers.
    pub fn slice(&self, span: Span) -> &str {
        let text = &self.get(span.file).text;
        text.get(span.start as usize..span.end as usize).unwrap_or("")
    }

    /// 1-based line and column of a span's start, for one-line summaries.
    pub fn line_col(&self, span: Span) -> (usize, usize) {
        let text = &self.get(span.file).text;
        let upto = text.get(..span.start as usize).unwrap_or(text);
        let line = upto.matches('\n').count() + 1;
        let col = upto.rsplit('\n').next().map_or(0, |last| last.chars().count()) + 1;
        (line, col)
    }

    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceText)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }
}
