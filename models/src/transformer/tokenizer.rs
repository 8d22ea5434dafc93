//! The tokenizer of a transformer checkpoint: a Hugging Face `tokenizer.json` read (and checked
//! against the vocabulary), or a word-level one written for a word list.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::LoadError;

/// Reads the tokenizer at `path`, checks that it has exactly `vocab` tokens, and returns it with
/// the text of each id; errors name the manifest's `tokenizer` (or `vocab`) field.
pub(crate) fn read_tokenizer(
    path: &Path,
    table: &toml::Table,
    manifest: &str,
    vocab: usize,
) -> Result<(Tokenizer, Vec<String>), LoadError> {
    let bad = |field: &str, expected: String| LoadError::FieldValue {
        manifest: manifest.into(),
        field: field.into(),
        value: table.get(field).map(ToString::to_string).unwrap_or_default(),
        expected,
    };
    if !path.is_file() {
        return Err(bad("tokenizer", format!("no such file: {}", path.display())));
    }
    let tokenizer = Tokenizer::from_file(path)
        .map_err(|e| bad("tokenizer", format!("{} is not a tokenizer.json: {e}", path.display())))?;
    let size = tokenizer.get_vocab_size(true);
    if size != vocab {
        return Err(bad("vocab", format!("the tokenizer {} has {size} tokens", path.display())));
    }
    let words = (0..vocab as u32)
        .map(|id| {
            tokenizer
                .id_to_token(id)
                .ok_or_else(|| bad("tokenizer", format!("the tokenizer {} has no token of id {id}", path.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((tokenizer, words))
}

/// A JSON string literal of `text`.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes a word-level `tokenizer.json` to `path`: `words` in id order, split on whitespace (the
/// `Whitespace` pre-tokenizer: runs of word characters, runs of other non-space characters), the
/// ids `special` as special added tokens (so `<mask>` in a text is one token), and no unknown
/// token in the vocabulary (a word outside it is an encoding error).
pub fn write_word_level_tokenizer(path: &Path, words: &[&str], special: &[u32]) -> Result<(), LoadError> {
    let backend = |message: String| LoadError::Backend { path: path.into(), message };
    let vocab: Vec<String> = words.iter().enumerate().map(|(id, w)| format!("{}: {id}", json_string(w))).collect();
    let added: Vec<String> = special
        .iter()
        .filter_map(|&id| words.get(id as usize).map(|w| (id, w)))
        .map(|(id, w)| {
            format!(
                r#"{{"id": {id}, "content": {}, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}}"#,
                json_string(w)
            )
        })
        .collect();
    let json = format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [{}], "normalizer": null,
"pre_tokenizer": {{"type": "Whitespace"}}, "post_processor": null, "decoder": null,
"model": {{"type": "WordLevel", "vocab": {{{}}}, "unk_token": "<unk>"}}}}"#,
        added.join(", "),
        vocab.join(", ")
    );
    // Parsed and saved by the crate itself, so the file is in its canonical form.
    let tokenizer = Tokenizer::from_bytes(json.as_bytes()).map_err(|e| backend(e.to_string()))?;
    tokenizer.save(path, true).map_err(|e| backend(e.to_string()))
}
