//! JSON text written straight into a `String`, for what is built on every request (the
//! problem documents of denials and errors): no value tree, no map, no allocation but
//! the text's own.

/// A JSON object being written; [`Object::finish`] closes it.
pub struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    /// Opens an object at the end of `out`.
    pub fn new(out: &'a mut String) -> Object<'a> {
        out.push('{');
        Object { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        string(self.out, key);
        self.out.push(':');
    }

    /// `"key": "value"`.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.str_parts(key, &[value])
    }

    /// `"key": "…"`, the string being `parts` one after another.
    pub fn str_parts(&mut self, key: &str, parts: &[&str]) -> &mut Self {
        self.key(key);
        self.out.push('"');
        for part in parts {
            escape_into(self.out, part);
        }
        self.out.push('"');
        self
    }

    /// `"key": "value"`, left out when there is no value.
    pub fn some_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.str(key, value);
        }
        self
    }

    /// `"key": n`.
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        use std::fmt::Write as _;
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// `"key": [ … ]`, each item an object that `item` writes.
    pub fn objects<T>(
        &mut self,
        key: &str,
        items: impl IntoIterator<Item = T>,
        mut item: impl FnMut(&mut Object<'_>, T),
    ) -> &mut Self {
        self.key(key);
        self.out.push('[');
        for (index, value) in items.into_iter().enumerate() {
            if index > 0 {
                self.out.push(',');
            }
            let mut object = Object::new(self.out);
            item(&mut object, value);
            object.finish();
        }
        self.out.push(']');
        self
    }

    /// Closes the object.
    pub fn finish(self) {
        self.out.push('}');
    }
}

/// Writes `value` as a JSON string.
pub fn string(out: &mut String, value: &str) {
    out.push('"');
    escape_into(out, value);
    out.push('"');
}

/// Writes `value` escaped for the inside of a JSON string (RFC 8259 §7).
fn escape_into(out: &mut String, value: &str) {
    let mut plain = 0;
    for (at, byte) in value.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&value[plain..at]);
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escaped);
        }
        plain = at + 1;
    }
    out.push_str(&value[plain..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_read_back_as_written() {
        let tricky =
            "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} del \u{7f} é ✓ \u{2028}";
        let mut out = String::new();
        let mut object = Object::new(&mut out);
        object
            .str("plain", "value")
            .str(tricky, tricky)
            .str_parts("joined", &["urn:", "x\"y"])
            .some_str("absent", None)
            .some_str("present", Some("yes"))
            .u64("number", u64::MAX)
            .objects("list", ["a", "b"], |item, name| {
                item.str("name", name);
            })
            .objects("empty", std::iter::empty::<&str>(), |_, _| {});
        object.finish();
        let read: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            read,
            serde_json::json!({
                "plain": "value",
                tricky: tricky,
                "joined": "urn:x\"y",
                "present": "yes",
                "number": u64::MAX,
                "list": [{ "name": "a" }, { "name": "b" }],
                "empty": [],
            })
        );
    }
}
