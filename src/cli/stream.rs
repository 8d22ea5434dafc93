//! The text of a language model's rows while they grow: row 0 written to standard output as its
//! tokens come (for a run of one row), a progress line of tokens per second on standard error, and
//! stop strings, which end a row where they appear.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use sched::api::TokenText;

/// What a run's token rows print and where they stop.
pub struct Stream<'a> {
    codec: &'a dyn TokenText,
    /// The prompt's length: only what comes after it is printed and searched for stop strings.
    prompt: usize,
    eos: Option<u32>,
    stops: &'a [String],
    /// Whether row 0 is written to standard output as it grows.
    live: bool,
    /// Whether standard error shows a progress line.
    progress: bool,
    started: Instant,
    /// The text of row 0 printed so far.
    printed: Mutex<String>,
}

impl<'a> Stream<'a> {
    pub fn new(
        codec: &'a dyn TokenText,
        prompt: usize,
        eos: Option<u32>,
        stops: &'a [String],
        live: bool,
        progress: bool,
    ) -> Stream<'a> {
        Stream {
            codec,
            prompt,
            eos,
            stops,
            live,
            progress,
            started: Instant::now(),
            printed: Mutex::new(String::new()),
        }
    }

    /// The new text of a row: after the prompt, up to its end token.
    fn generated(&self, row: &[u32]) -> String {
        let tail = row.get(self.prompt..).unwrap_or_default();
        let end = tail.iter().position(|&t| Some(t) == self.eos).unwrap_or(tail.len());
        self.codec.decode(&tail[..end]).unwrap_or_default()
    }

    /// Called after every verb on the rows: prints, and returns the rows a stop string ends.
    pub fn on_tokens(&self, rows: &[Vec<u32>]) -> Vec<usize> {
        let mut ending = Vec::new();
        if !self.stops.is_empty() {
            for (b, row) in rows.iter().enumerate() {
                if stop_at(&self.generated(row), self.stops).is_some() {
                    ending.push(b);
                }
            }
        }
        if self.live
            && let Some(row) = rows.first()
        {
            let text = self.generated(row);
            let shown = &text[..stop_at(&text, self.stops).unwrap_or(text.len())];
            // Printed so far, and the new part; a token that completes a character shows then.
            let mut printed = self.printed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(new) =
                shown.strip_prefix(printed.as_str()).filter(|new| !new.is_empty() && !new.ends_with('\u{fffd}'))
            {
                let mut stdout = std::io::stdout().lock();
                let _ = write!(stdout, "{new}");
                let _ = stdout.flush();
                *printed = shown.to_string();
            }
            if self.progress {
                let tokens = row.len().saturating_sub(self.prompt);
                let seconds = self.started.elapsed().as_secs_f64();
                eprint!("\r{tokens} tokens, {:.1} tokens/s", tokens as f64 / seconds.max(1e-9));
            }
        }
        ending
    }

    /// Whether row 0 streams to standard output.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Ends the stream: the line of standard output, and the progress line's last state.
    pub fn finish(&self, tokens: usize) {
        if !self.live {
            return;
        }
        println!();
        let seconds = self.started.elapsed().as_secs_f64();
        eprintln!(
            "{}{tokens} new tokens in {seconds:.2} s, {:.1} tokens/s",
            if self.progress { "\r" } else { "" },
            tokens as f64 / seconds.max(1e-9)
        );
    }
}

/// Where the first of `stops` starts in `text`.
pub fn stop_at(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter(|s| !s.is_empty()).filter_map(|stop| text.find(stop.as_str())).min()
}
