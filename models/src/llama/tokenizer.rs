//! The tokenizer of a language model: a Hugging Face `tokenizer.json`, or one built from a GGUF
//! file's metadata (its byte-level BPE vocabulary, merges and special tokens), which gives the ids
//! of the tokenizer transformers converts from the same file.

use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::LoadError;

/// The GGUF token type of a control token (`<|im_start|>`): a special token, never split.
const CONTROL: i64 = 3;
/// The GGUF token types that are special: user-defined (4) and unused (5) tokens too.
const SPECIAL_TYPES: [i64; 3] = [CONTROL, 4, 5];

/// llama.cpp's pre-tokenizer regex of Llama 3 (`llama3`, `smaug-bpe`): digits in groups of three.
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: single digits.
const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The strings of a metadata array.
fn strings<'a>(content: &'a Content, key: &str) -> Option<Vec<&'a str>> {
    match content.metadata.get(key)? {
        Value::Array(items) => items.iter().map(|item| item.to_string().ok().map(String::as_str)).collect(),
        _ => None,
    }
}

/// A metadata value as an integer.
pub(crate) fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::U8(v) => Some(i64::from(*v)),
        Value::I8(v) => Some(i64::from(*v)),
        Value::U16(v) => Some(i64::from(*v)),
        Value::I16(v) => Some(i64::from(*v)),
        Value::U32(v) => Some(i64::from(*v)),
        Value::I32(v) => Some(i64::from(*v)),
        Value::U64(v) => i64::try_from(*v).ok(),
        Value::I64(v) => Some(*v),
        _ => None,
    }
}

/// The byte-level BPE tokenizer of a GGUF file's metadata (`tokenizer.ggml.model = "gpt2"`): the
/// vocabulary and merges as they are, the pre-tokenizer llama.cpp names in `tokenizer.ggml.pre`
/// (`smollm` and `gpt2` split single digits or not before GPT-2's byte-level split; `llama3` and
/// `qwen2` use their own regexes), no prefix space, and every control token special. No BOS or EOS
/// is added: a chat template writes them where the model expects them.
pub fn from_gguf(path: &Path, content: &Content) -> Result<Tokenizer, LoadError> {
    let missing = |key: &str, expected: &str| LoadError::GgufMetadata {
        path: path.into(),
        key: key.into(),
        expected: expected.into(),
    };
    let model = content.metadata.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok());
    match model.map(String::as_str) {
        Some("gpt2") => {}
        Some(other) => {
            return Err(LoadError::Tokenizer {
                path: path.into(),
                message: format!("the tokenizer model `{other}` is not supported (byte-level BPE, `gpt2`, is)"),
            });
        }
        None => return Err(missing("tokenizer.ggml.model", "the tokenizer's model, `gpt2`")),
    }
    let tokens = strings(content, "tokenizer.ggml.tokens")
        .ok_or_else(|| missing("tokenizer.ggml.tokens", "an array of strings"))?;
    let merges = strings(content, "tokenizer.ggml.merges")
        .ok_or_else(|| missing("tokenizer.ggml.merges", "an array of strings"))?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(id, token)| ((*token).to_string(), id as u32)).collect();
    let merges = merges
        .iter()
        .map(|merge| {
            merge.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| LoadError::Tokenizer {
                path: path.into(),
                message: format!("the merge `{merge}` is not two tokens separated by a space"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tokenizer_error = |e: tokenizers::Error| LoadError::Tokenizer { path: path.into(), message: e.to_string() };
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tokenizer_error)?;
    let mut tokenizer = Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    let pre =
        content.metadata.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map_or("gpt2", String::as_str);
    let regex = |pattern: &str| -> Result<Split, LoadError> {
        Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false)
            .map_err(tokenizer_error)
    };
    let pre_tokenizer = match pre {
        "llama3" | "llama-bpe" | "smaug-bpe" => {
            Sequence::new(vec![regex(REGEX_LLAMA3)?.into(), ByteLevel::new(false, true, false).into()])
        }
        "qwen2" => Sequence::new(vec![regex(REGEX_QWEN2)?.into(), ByteLevel::new(false, true, false).into()]),
        "smollm" | "starcoder" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]),
        _ => Sequence::new(vec![byte_level.into()]),
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    if let Some(Value::Array(types)) = content.metadata.get("tokenizer.ggml.token_type") {
        let special: Vec<AddedToken> = types
            .iter()
            .zip(&tokens)
            .filter(|(kind, _)| integer(kind).is_some_and(|k| SPECIAL_TYPES.contains(&k)))
            .map(|(_, token)| AddedToken::from((*token).to_string(), true))
            .collect();
        tokenizer.add_special_tokens(special).map_err(tokenizer_error)?;
    }
    Ok(tokenizer)
}

/// Reads a `tokenizer.json`.
pub fn from_file(path: &Path) -> Result<Tokenizer, LoadError> {
    Tokenizer::from_file(path).map_err(|e| LoadError::Tokenizer { path: path.into(), message: e.to_string() })
}

/// Checks that a tokenizer's vocabulary fits the model's: every id it produces must have an
/// embedding. (A model's vocabulary may be padded beyond the tokenizer's, never the other way.)
pub fn check_vocab(path: &Path, tokenizer: &Tokenizer, model_vocab: usize) -> Result<(), LoadError> {
    let size = tokenizer.get_vocab_size(true);
    if size > model_vocab {
        return Err(LoadError::TokenizerVocab { path: path.into(), tokenizer: size, model: model_vocab });
    }
    Ok(())
}

/// The text of every id, for the model's vocabulary (`<id>` for ids the tokenizer lacks).
pub fn words(tokenizer: &Tokenizer, vocab: usize) -> Vec<String> {
    (0..vocab as u32).map(|id| tokenizer.decode(&[id], false).unwrap_or_else(|_| format!("<{id}>"))).collect()
}
