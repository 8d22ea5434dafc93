//! Property tests: no input, however malformed, makes the front end panic or hang.
//!
//! Three generators feed `analyze`, then the NFE counter and the binding check on whatever
//! checks clean: arbitrary bytes, soups of the language's own tokens (which reach deep into the
//! parser and checker), and the shipped examples with random edits. 10 500 cases in all.

use proptest::prelude::*;
use sched_lang::{analyze, nfe, types::ModelKind};

const TOKENS: &[&str] = &[
    "schedule",
    "step",
    "let",
    "carry",
    "for",
    "in",
    "repeat",
    "while",
    "if",
    "else",
    "break",
    "continue",
    "emit",
    "refine",
    "jump",
    "extend",
    "from",
    "to",
    "by",
    "using",
    "with",
    "as",
    "on",
    "true",
    "false",
    "x",
    "t",
    "s",
    "net",
    "model",
    "model<eps>",
    "model<flow_map>",
    "int",
    "float",
    "tensor",
    "tokens",
    "grid",
    "times",
    "range",
    "predict",
    "gaussian",
    "ddim",
    "heun",
    "dpmpp_2m",
    "unmask",
    "cfg",
    "prompt",
    "mask",
    "noise",
    "tail",
    "karras",
    "1",
    "0",
    "0.5",
    "1e-3",
    "\"s\"",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    ";",
    "=",
    "==",
    "+",
    "-",
    "*",
    "/",
    "^",
    "%",
    "<",
    ">",
    "->",
    "!",
    "&&",
    "||",
    ".",
    "//",
    "///",
    "\n",
    " ",
];

const EXAMPLES: &[&str] = &[
    include_str!("../../examples/ddim.sched"),
    include_str!("../../examples/dpmpp_2m.sched"),
    include_str!("../../examples/adaptive.sched"),
    include_str!("../../examples/block_diffusion.sched"),
    include_str!("../../examples/speculative.sched"),
    include_str!("../../examples/diffusion_forcing.sched"),
    include_str!("../../examples/consistency.sched"),
    include_str!("../../lang/std/solvers.sched"),
];

/// Runs every front-end entry point that takes user input.
fn exercise(bytes: &[u8]) {
    let analysis = analyze("input.sched", bytes);
    for diagnostic in &analysis.diagnostics {
        let span = diagnostic.primary_span();
        assert!(span.start <= span.end, "inverted span in {diagnostic:?}");
    }
    if let Some(program) = &analysis.program {
        for (id, info) in program.user_schedules() {
            let _ = nfe::count(program, id);
            for kind in ModelKind::ALL {
                for &index in &info.model_params {
                    let _ = program.check_model_binding(&info.name, &info.params[index].name, kind.name());
                }
            }
            let _ = program.check_model_binding(&info.name, "no_such_model", "eps");
        }
    }
}

#[derive(Clone, Debug)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, token: usize },
    Duplicate { at: usize, len: usize },
    Swap { a: usize, b: usize },
}

fn apply(source: &str, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = source.as_bytes().to_vec();
    for edit in edits {
        let n = bytes.len().max(1);
        match *edit {
            Edit::Delete { at, len } => {
                let start = at % n;
                let end = (start + len).min(bytes.len());
                bytes.drain(start.min(bytes.len())..end);
            }
            Edit::Insert { at, token } => {
                let at = (at % n).min(bytes.len());
                let token = TOKENS[token % TOKENS.len()].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            Edit::Duplicate { at, len } => {
                let start = (at % n).min(bytes.len());
                let end = (start + len).min(bytes.len());
                let copy = bytes[start..end].to_vec();
                bytes.splice(start..start, copy);
            }
            Edit::Swap { a, b } => {
                if !bytes.is_empty() {
                    let (a, b) = (a % bytes.len(), b % bytes.len());
                    bytes.swap(a, b);
                }
            }
        }
    }
    bytes
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, token)| Edit::Insert { at, token }),
        (any::<usize>(), 1usize..200).prop_map(|(at, len)| Edit::Duplicate { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap { a, b }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_text_does_not_panic(text in "\\PC{0,300}") {
        exercise(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn token_soup_does_not_panic(tokens in proptest::collection::vec(0..TOKENS.len(), 0..120)) {
        let text: Vec<&str> = tokens.iter().map(|&i| TOKENS[i]).collect();
        exercise(text.join(" ").as_bytes());
    }

    #[test]
    fn mutated_examples_do_not_panic(example in 0..EXAMPLES.len(), edits in proptest::collection::vec(edit(), 1..6)) {
        exercise(&apply(EXAMPLES[example], &edits));
    }
}

/// Wrapping a valid schedule in a statement-level soup of valid pieces keeps the checker busy
/// with well-formed but ill-typed programs.
#[test]
fn pathological_inputs_are_diagnosed_quickly() {
    let deep_else_if = format!(
        "schedule s(net: model<eps>) {{ let x = gaussian() if true {{ }}{} emit x }}",
        " else if true { }".repeat(20_000)
    );
    let long_chain =
        format!("schedule s(net: model<eps>) {{ let x = gaussian(){} emit x }}", ".tail(1)".repeat(10_000));
    let many_prefixes = format!("schedule s(net: model<eps>) {{ let y = {}1 emit y }}", "-".repeat(50_000));
    let power_tower = format!("schedule s(net: model<eps>) {{ let y = 2{} emit y }}", "^2".repeat(200));
    let huge_loop = "schedule s(net: model<eps>) { let x = gaussian() repeat 1000000000 { x = x } emit x }".to_string();
    let huge_grid = "schedule s(net: model<eps>) { let x = gaussian() for t, s in grid(1 -> 0, 4000000000) { refine x from t to s by ddim() } emit x }".to_string();
    for input in [deep_else_if, long_chain, many_prefixes, power_tower, huge_loop, huge_grid] {
        let started = std::time::Instant::now();
        exercise(input.as_bytes());
        // A hang guard, not a speed test: generous enough for a loaded 2-core machine.
        assert!(started.elapsed().as_secs() < 60, "took {:?}", started.elapsed());
    }
}
