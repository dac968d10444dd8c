//! The model's own chat template (`chat_template` in `tokenizer_config.json`), rendered with
//! minijinja configured as transformers configures Jinja (`trim_blocks`, `lstrip_blocks`,
//! `raise_exception`, `strftime_now`, a `tojson` that takes Python's keyword arguments, Python's
//! string and dict methods), with `add_generation_prompt`.

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

/// One message of a chat.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "chat";

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are the tokenizer's, which templates use.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| e.to_string())?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| format!("the chat template does not compile: {e}"))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The prompt text of `messages`, ready for the assistant's answer.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| e.to_string())?;
        template
            .render(minijinja::context! {
                messages => Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| format!("the chat template failed: {e}"))
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> String {
    chrono::Local::now().format(&format).to_string()
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=…, separators=…, sort_keys=…)`, as
/// transformers' `tojson` is; other keyword arguments are accepted and ignored.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let (item, key) = match &separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let style = JsonStyle {
        indent,
        item,
        key,
        sort: sort.unwrap_or(false),
    };
    let mut out = String::new();
    style.write(&value, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

/// How Python's `json.dumps` lays a value out.
struct JsonStyle {
    indent: Option<usize>,
    item: String,
    key: String,
    sort: bool,
}

impl JsonStyle {
    fn newline(&self, out: &mut String, depth: usize) {
        if let Some(n) = self.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    }

    fn write(&self, v: &Value, depth: usize, out: &mut String) -> Result<(), Error> {
        use minijinja::value::ValueKind as K;
        let plain = |v: &Value| {
            serde_json::to_string(v)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
        };
        match v.kind() {
            K::Undefined | K::None => out.push_str("null"),
            K::Seq | K::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item);
                    }
                    self.newline(out, depth + 1);
                    self.write(x, depth + 1, out)?;
                }
                self.newline(out, depth);
                out.push(']');
            }
            K::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if keys.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                if self.sort {
                    keys.sort();
                }
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item);
                    }
                    self.newline(out, depth + 1);
                    let name = k
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| k.to_string());
                    out.push_str(&plain(&Value::from(name))?);
                    out.push_str(&self.key);
                    self.write(&v.get_item(k)?, depth + 1, out)?;
                }
                self.newline(out, depth);
                out.push('}');
            }
            _ => out.push_str(&plain(v)?),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn a_chatml_template_renders_as_transformers_does() {
        // SmolLM2-Instruct's template (ChatML with a default system prompt).
        let source = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let t = ChatTemplate::new(source, "<|im_start|>", "<|im_end|>").unwrap();
        assert_eq!(
            t.render(&[msg("user", "Hi")]).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn blocks_trim_like_jinja_in_transformers_and_python_methods_work() {
        let source = "{{ bos_token }}\n{% for m in messages %}\n  {% if m.role == 'system' %}\n[SYS]{{ m.content.strip() }}\n  {% else %}\n[{{ m.role.upper() }}]{{ m.content }}\n  {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}[ASSISTANT]{% endif %}";
        let t = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&[msg("system", "  be brief "), msg("user", "Hi")])
                .unwrap(),
            "<s>\n[SYS]be brief\n[USER]Hi\n[ASSISTANT]"
        );
    }

    #[test]
    fn raise_exception_and_tojson_with_python_arguments() {
        let t = ChatTemplate::new(
            "{% if messages[0].role == 'bad' %}{{ raise_exception('Roles must alternate') }}{% endif %}{{ messages | tojson(ensure_ascii=False) }}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&[msg("user", "é<b>")]).unwrap(),
            r#"[{"role": "user", "content": "é<b>"}]"#
        );
        let err = t.render(&[msg("bad", "x")]).unwrap_err();
        assert!(err.contains("Roles must alternate"), "{err}");
        let t = ChatTemplate::new("{{ messages[0] | tojson(indent=2) }}", "", "").unwrap();
        assert_eq!(
            t.render(&[msg("user", "a")]).unwrap(),
            "{\n  \"role\": \"user\",\n  \"content\": \"a\"\n}"
        );
    }
}
