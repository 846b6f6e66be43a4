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

    /// Keys are our own words, never data: they are written as they are. Inlined, so
    /// that a literal key is copied as the constant it is, without a call to `memcpy`.
    #[inline(always)]
    fn key(&mut self, key: &str) {
        debug_assert!(!needs_escape(key), "{key:?}");
        self.out.push_str(if self.first { "\"" } else { ",\"" });
        self.first = false;
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    /// `"key": "value"`.
    #[inline(always)]
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.str_parts(key, &[value])
    }

    /// `"key": "…"`, the string being `parts` one after another.
    #[inline(always)]
    pub fn str_parts(&mut self, key: &str, parts: &[&str]) -> &mut Self {
        self.key(key);
        quoted(self.out, parts);
        self
    }

    /// `"key": "value"`, or `"key": null` when there is no value.
    #[inline(always)]
    pub fn str_or_null(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(key, value),
            None => {
                self.key(key);
                self.out.push_str("null");
                self
            }
        }
    }

    /// `"key": "value"` as [`Object::plain`] writes it, or `"key": null`.
    #[inline(always)]
    pub fn plain_or_null(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.plain(key, value),
            None => self.null(key),
        }
    }

    /// `"key": "value"`, for a value of the gateway's own making that never needs an
    /// escape (a reason code, a time): written as it is, without looking at its bytes.
    #[inline(always)]
    pub fn plain(&mut self, key: &str, value: &str) -> &mut Self {
        self.plain_with(key, |out| out.push_str(value))
    }

    /// `"key": "…"`, the string being what `write` appends: text of the gateway's own
    /// making that never needs an escape (digits, an address).
    #[inline(always)]
    pub fn plain_with(&mut self, key: &str, write: impl FnOnce(&mut String)) -> &mut Self {
        self.key(key);
        self.out.push('"');
        let start = self.out.len();
        write(self.out);
        debug_assert!(
            !needs_escape(&self.out[start..]),
            "{:?}",
            &self.out[start..]
        );
        self.out.push('"');
        self
    }

    /// `"key": "…"`, the string being what `value` displays, written without a copy.
    pub fn display(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write as _;
        self.str_with(key, |out| {
            let _ = write!(out, "{value}");
        })
    }

    /// `"key": "…"`, the string being what `write` appends, escaped where it needs it.
    #[inline(always)]
    pub fn str_with(&mut self, key: &str, write: impl FnOnce(&mut String)) -> &mut Self {
        self.key(key);
        self.out.push('"');
        let start = self.out.len();
        write(self.out);
        if needs_escape(&self.out[start..]) {
            let shown = self.out.split_off(start);
            escape_slowly(self.out, &shown);
        }
        self.out.push('"');
        self
    }

    /// `"key": [ … ]`, the items written by `items`.
    #[inline(always)]
    pub fn array(&mut self, key: &str, items: impl FnOnce(&mut Array<'_>)) -> &mut Self {
        self.key(key);
        self.out.push('[');
        items(&mut Array {
            out: self.out,
            first: true,
        });
        self.out.push(']');
        self
    }

    /// `"key": { … }`, the fields written by `fields`.
    #[inline(always)]
    pub fn object(&mut self, key: &str, fields: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        self.key(key);
        let mut object = Object::new(self.out);
        fields(&mut object);
        object.finish();
        self
    }

    /// Whole fields, `"a":…,"b":…`, given as the JSON text they are: for a constant run
    /// of fields, written in one copy.
    #[inline(always)]
    pub fn fields_text(&mut self, fields: &'static str) -> &mut Self {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str(fields);
        self
    }

    /// `"key": ["…", …]`, an array of the strings `items`.
    #[inline(always)]
    pub fn strs<'i>(&mut self, key: &str, items: impl IntoIterator<Item = &'i str>) -> &mut Self {
        self.array(key, |array| {
            for item in items {
                array.value().str(item);
            }
        })
    }

    /// `"key": null`.
    #[inline(always)]
    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.out.push_str("null");
        self
    }

    /// `"key": true` or `false`.
    #[inline(always)]
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// A key that comes from data (a claim's name in a policy file), escaped where it
    /// needs it; the value is written by the returned writer's one call.
    pub fn data_key(&mut self, key: &str) -> Value<'_> {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        quoted(self.out, &[key]);
        self.out.push(':');
        Value { out: self.out }
    }

    /// `"key": "value"`, left out when there is no value.
    #[inline]
    pub fn some_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.str(key, value);
        }
        self
    }

    /// `"key": n`.
    #[inline(always)]
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        push_u64(self.out, value);
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

/// A JSON array being written, inside an object's [`Object::array`].
pub struct Array<'a> {
    out: &'a mut String,
    first: bool,
}

impl Array<'_> {
    fn comma(&mut self) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
    }

    /// A string item, made of `parts` one after another.
    pub fn str_parts(&mut self, parts: &[&str]) {
        self.comma();
        quoted(self.out, parts);
    }

    /// An object item; the caller finishes it.
    pub fn object(&mut self) -> Object<'_> {
        self.comma();
        Object::new(self.out)
    }

    /// An item of any kind, written by the returned writer's one call.
    pub fn value(&mut self) -> Value<'_> {
        self.comma();
        Value { out: self.out }
    }
}

/// One JSON value to write, after a key or as an array item.
pub struct Value<'a> {
    out: &'a mut String,
}

impl Value<'_> {
    /// A string.
    pub fn str(self, value: &str) {
        quoted(self.out, &[value]);
    }

    /// A finite number as Rust writes it (`1`, `-1.5`, `0.0000002`); anything else is `null`,
    /// which JSON has no number for.
    pub fn number(self, value: f64) {
        use std::fmt::Write as _;
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            self.out.push_str("null");
        }
    }

    /// `true` or `false`.
    pub fn bool(self, value: bool) {
        self.out.push_str(if value { "true" } else { "false" });
    }

    /// `null`.
    pub fn null(self) {
        self.out.push_str("null");
    }

    /// An array, its items written by `items`.
    pub fn array(self, items: impl FnOnce(&mut Array<'_>)) {
        self.out.push('[');
        items(&mut Array {
            out: self.out,
            first: true,
        });
        self.out.push(']');
    }

    /// An object, its fields written by `fields`.
    pub fn object(self, fields: impl FnOnce(&mut Object<'_>)) {
        let mut object = Object::new(self.out);
        fields(&mut object);
        object.finish();
    }
}

/// Writes `value` in decimal.
fn push_u64(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|digit| char::from(*digit)));
}

/// Writes `value` as a JSON string.
pub fn push_quoted(out: &mut String, value: &str) {
    quoted(out, &[value]);
}

/// Writes `parts`, one after another, as one JSON string.
#[inline(always)]
fn quoted(out: &mut String, parts: &[&str]) {
    out.push('"');
    for part in parts {
        escape_into(out, part);
    }
    out.push('"');
}

/// Writes `value` escaped for the inside of a JSON string (RFC 8259 §7). Nearly every
/// value needs no escape: that check is inlined, the escaping is not.
#[inline]
fn escape_into(out: &mut String, value: &str) {
    if needs_escape(value) {
        escape_slowly(out, value);
    } else {
        out.push_str(value);
    }
}

#[inline(never)]
fn escape_slowly(out: &mut String, value: &str) {
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

/// Whether `value` has a byte that a JSON string must escape: `"`, `\` or a control
/// character. Nearly every string has none, so eight bytes are checked at a time.
#[inline]
fn needs_escape(value: &str) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A word's high bits are set where a byte is below 0x20, or `"` or `\` (after an
    // exclusive or, zero): exact as a yes or no, without a branch. Nearly every string
    // needs no escape, so the words are not checked one by one for an early answer.
    let flagged = |word: u64| {
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        (word.wrapping_sub(ONES * 0x20) & !word)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
    };
    let bytes = value.as_bytes();
    let word_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_ne_bytes(word)
    };
    if bytes.len() < 8 {
        return bytes
            .iter()
            .any(|byte| *byte < 0x20 || *byte == b'"' || *byte == b'\\');
    }
    // Whole words, then the last eight bytes (overlapping the words before them): no
    // byte-by-byte tail, and no copy of one.
    let mut found = flagged(word_at(bytes.len() - 8));
    for word in 0..bytes.len() / 8 {
        found |= flagged(word_at(word * 8));
    }
    found & HIGHS != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_that_needs_an_escape_is_found_wherever_it_sits() {
        for byte in 0u8..=0x7f {
            let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
            for (len, at) in (1..=17).flat_map(|len| (0..len).map(move |at| (len, at))) {
                let mut text = vec![b'a'; len];
                text[at] = byte;
                let text = String::from_utf8(text).unwrap();
                assert_eq!(needs_escape(&text), expected, "{byte:#x} at {at} of {len}");
            }
        }
        assert!(!needs_escape("caf\u{e9} \u{2713} \u{7f}\u{80}"));
    }

    #[test]
    fn objects_read_back_as_written() {
        let tricky =
            "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} del \u{7f} é ✓ \u{2028}";
        let mut out = String::new();
        let mut object = Object::new(&mut out);
        object
            .str("plain", "value")
            .plain("ours", "2026-12-07T02:23:00.000Z")
            .plain_with("digits", |out| out.push_str("10.0.0.1"))
            .str("tricky", tricky)
            .str_parts("joined", &["urn:", "x\"y"])
            .some_str("absent", None)
            .some_str("present", Some("yes"))
            .u64("number", u64::MAX)
            .u64("zero", 0)
            .objects("list", ["a", "b"], |item, name| {
                item.str("name", name);
            })
            .objects("empty", std::iter::empty::<&str>(), |_, _| {})
            .str_or_null("none", None)
            .display("shown", format_args!("a{}b", '"'))
            .array("mixed", |array| {
                array.str_parts(&["x", ":", "y"]);
                array.object().finish();
                array.value().number(-1.5);
                array.value().number(f64::NAN);
                array.value().bool(true);
                array.value().null();
                array.value().array(|inner| inner.value().str("in"));
                array.value().object(|fields| {
                    fields.bool("no", false);
                });
            })
            .object("nested", |fields| {
                fields.fields_text("\"first\":[]");
                fields.null("gone");
                fields.data_key("a \"claim\"").number(3.0);
            })
            .fields_text("\"constant\":null,\"run\":{}")
            .strs("names", ["a", "b\""]);
        object.finish();
        let read: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            read,
            serde_json::json!({
                "plain": "value",
                "ours": "2026-12-07T02:23:00.000Z",
                "digits": "10.0.0.1",
                "tricky": tricky,
                "joined": "urn:x\"y",
                "present": "yes",
                "number": u64::MAX,
                "zero": 0,

                "list": [{ "name": "a" }, { "name": "b" }],
                "empty": [],
                "none": null,
                "shown": "a\"b",
                "mixed": ["x:y", {}, -1.5, null, true, null, ["in"], { "no": false }],
                "nested": { "first": [], "gone": null, "a \"claim\"": 3 },
                "constant": null,
                "run": {},
                "names": ["a", "b\""],
            })
        );
    }
}
