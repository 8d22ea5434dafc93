//! Chat templates: the Jinja template a checkpoint ships (`tokenizer.chat_template` of a GGUF
//! file, `chat_template` of `tokenizer_config.json`), rendered with minijinja the way transformers'
//! `apply_chat_template` renders it: blocks trimmed (`trim_blocks`, `lstrip_blocks`), Python's
//! string methods available, `raise_exception` an error, and the generation prompt asked for.

use minijinja::{Environment, Error, ErrorKind, context};
use sched_runtime::model::ChatMessage;
use serde::Serialize;

/// One message as a template sees it.
#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

/// `template` applied to `messages`, ending where the assistant's answer starts.
pub(crate) fn render(
    template: &str,
    messages: &[ChatMessage],
    bos: Option<&str>,
    eos: Option<&str>,
) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |message: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, message))
    });
    env.add_template("chat", template).map_err(|e| format!("the chat template does not parse: {e}"))?;
    let template = env.get_template("chat").map_err(|e| e.to_string())?;
    let messages: Vec<Message<'_>> = messages.iter().map(|m| Message { role: &m.role, content: &m.content }).collect();
    template
        .render(context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => bos.unwrap_or(""),
            eos_token => eos.unwrap_or(""),
        })
        .map_err(|e| format!("the chat template cannot render the chat: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(content: &str) -> ChatMessage {
        ChatMessage { role: "user".into(), content: content.into() }
    }

    #[test]
    fn a_chatml_template_renders_as_transformers_renders_it() {
        let template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
            {{ '<|im_start|>system\\nYou are helpful<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] \
            + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}\
            {{ '<|im_start|>assistant\\n' }}{% endif %}";
        let rendered = render(template, &[user("Hi?")], None, None).expect("renders");
        assert_eq!(
            rendered,
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
        );
        let strip = "{{ messages[0]['content'].strip() }}";
        assert_eq!(render(strip, &[user("  x  ")], None, None).expect("renders"), "x", "Python's string methods");
        let raising = "{{ raise_exception('only user messages') }}";
        assert!(
            render(raising, &[user("x")], None, None).expect_err("the template raises").contains("only user messages")
        );
        assert!(
            render("{% for %}", &[], None, None).expect_err("the template does not parse").contains("does not parse")
        );
    }
}
