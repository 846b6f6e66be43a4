//! The recent decisions: the last `log.recent` decision-log lines, kept in memory so that
//! the admin listener can answer `GET /decisions/{id}` and `portcullis why`.
//!
//! A batch enters the ring whole as it leaves its thread's shard, before it is written,
//! so that a lookup finds each line in one or the other. A request pays for that only
//! when its line fills a batch. A batch is a chunk of the ring, and chunks leave it
//! oldest first once the lines after them are enough. The writer enters the batches it
//! sweeps oldest first, so that a thread's older lines do not push out another's newer.
//! The ring holds the lines logged last, whether or not the sink took them. Memory is
//! bounded twice: by lines, and by [`BYTES_PER_LINE`] for each line kept.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// The memory the ring may use for each line it keeps: a line with its trace is usually
/// 600 bytes to 1 KiB.
pub const BYTES_PER_LINE: usize = 2 * 1024;

/// The lines kept, oldest first, in the batches they were written in.
#[derive(Default)]
pub struct Recent {
    ring: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    chunks: VecDeque<Chunk>,
    /// Lines in `chunks`.
    lines: usize,
    /// Bytes `chunks` hold.
    bytes: usize,
    /// `log.recent`.
    keep: usize,
}

struct Chunk {
    /// Shared, so that a search reads it without holding the ring, which the writer
    /// thread and a request whose line fills its batch wait for.
    text: Arc<String>,
    lines: usize,
}

/// What `GET /decisions` asks for: lines whose fields equal these, when given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// `decision`: `allow`, `deny` or `error`.
    pub decision: Option<String>,
    /// `decision.reason`.
    pub reason: Option<String>,
    /// `rule.id`.
    pub rule: Option<String>,
}

impl Recent {
    /// Keeps the last `keep` lines from now on (0: none), letting older ones go.
    pub fn resize(&self, keep: usize) {
        let mut ring = super::lock(&self.ring);
        ring.keep = keep;
        ring.evict();
    }

    /// Keeps a batch of `lines` lines, each ending in a newline, and gives its text back
    /// to be written.
    pub fn keep(&self, mut text: String, lines: usize) -> Arc<String> {
        if lines == 0 {
            return Arc::new(text);
        }
        let mut ring = super::lock(&self.ring);
        if ring.keep == 0 {
            return Arc::new(text);
        }
        // A batch is formatted into a 68 KiB buffer; the ring keeps what it holds. A full
        // one, on a request's thread, is not copied for the few KiB it would save.
        if text.capacity() - text.len() > text.len() / 4 {
            text.shrink_to_fit();
        }
        let text = Arc::new(text);
        ring.lines += lines;
        ring.bytes += text.capacity();
        ring.chunks.push_back(Chunk {
            text: Arc::clone(&text),
            lines,
        });
        ring.evict();
        text
    }

    /// How many lines are kept now.
    pub fn len(&self) -> usize {
        super::lock(&self.ring).lines
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The line of the request with this id, the newest if there are several.
    pub fn find(&self, request_id: &str) -> Option<String> {
        let needle = id_needle(request_id);
        (self.texts().iter().rev())
            .find_map(|text| find_line(text, &needle))
            .map(str::to_owned)
    }

    /// Up to `limit` lines that `filter` lets through, newest first by their time: of
    /// the ring's and of `pending`, lines logged but not yet written.
    pub fn select(&self, filter: &Filter, limit: usize, pending: &[String]) -> Vec<String> {
        let texts = self.texts();
        let mut found = Vec::new();
        for text in pending {
            select_lines(text, filter, &mut found);
        }
        // A batch that entered the ring after `pending` was copied is in both: its lines
        // are taken once. (At most a few thousand lines are pending.)
        let pending_found: std::collections::HashSet<&str> = found.iter().copied().collect();
        let mut in_ring = Vec::new();
        for text in texts.iter().rev() {
            select_lines(text, filter, &mut in_ring);
        }
        found.extend(
            in_ring
                .into_iter()
                .filter(|line| !pending_found.contains(line)),
        );
        // Batches of several threads interleave: their lines are ordered by time here
        // (stable: of two lines in one millisecond, the later found stays later).
        found.sort_by(|a, b| timestamp(b).cmp(timestamp(a)));
        found.into_iter().take(limit).map(str::to_owned).collect()
    }
}

impl Recent {
    /// The chunks' texts, oldest first, taken from the ring in a moment.
    fn texts(&self) -> Vec<Arc<String>> {
        let ring = super::lock(&self.ring);
        ring.chunks
            .iter()
            .map(|chunk| Arc::clone(&chunk.text))
            .collect()
    }
}

/// A line's `timestamp`, which every line starts with; written to the millisecond, so its
/// text orders as its time does.
pub(super) fn timestamp(line: &str) -> &str {
    const START: &str = "{\"timestamp\":\"";
    line.strip_prefix(START)
        .and_then(|rest| rest.get(..24))
        .unwrap_or("")
}

impl Ring {
    /// Lets the oldest chunks go while the ones after them hold `keep` lines, and while
    /// the ring holds more than its bytes allow (the newest chunk always stays).
    fn evict(&mut self) {
        if self.keep == 0 {
            self.chunks.clear();
            self.lines = 0;
            self.bytes = 0;
            return;
        }
        let budget = self.keep.saturating_mul(BYTES_PER_LINE);
        while let Some(oldest) = self.chunks.front() {
            let enough_after = self.lines - oldest.lines >= self.keep;
            let too_big = self.bytes > budget && self.chunks.len() > 1;
            if !enough_after && !too_big {
                break;
            }
            self.lines -= oldest.lines;
            self.bytes -= oldest.text.capacity();
            self.chunks.pop_front();
        }
    }
}

/// `"request.id":"…"` as a line spells it. Inside a JSON string every `"` is escaped, so
/// this text is found only where it is the field itself, or a claim of that name.
pub fn id_needle(request_id: &str) -> String {
    let mut needle = String::from("\"request.id\":");
    crate::json::push_quoted(&mut needle, request_id);
    needle.push(',');
    needle
}

/// The newest line of `text` whose `request.id` field is the one `needle` names.
pub fn find_line<'t>(text: &'t str, needle: &str) -> Option<&'t str> {
    let finder = memchr::memmem::FinderRev::new(needle.as_bytes());
    let mut end = text.len();
    while let Some(at) = finder.rfind(&text.as_bytes()[..end]) {
        let start = text[..at].rfind('\n').map_or(0, |newline| newline + 1);
        let line = text[start..].lines().next().unwrap_or("");
        // The field comes before `principal.claims`: a claim spelled alike comes later.
        if line.find("\"request.id\":") == Some(at - start) {
            return Some(line);
        }
        end = at;
    }
    None
}

/// Pushes onto `found` the lines of `text` that `filter` lets through, newest first.
fn select_lines<'t>(text: &'t str, filter: &Filter, found: &mut Vec<&'t str>) {
    // A cheap look for each field's text first; a line that has them all is read as JSON
    // to be sure they are its fields and not a claim's that is spelled alike.
    let needles: Vec<String> = [
        ("decision", &filter.decision),
        ("decision.reason", &filter.reason),
        ("rule.id", &filter.rule),
    ]
    .iter()
    .filter_map(|(key, value)| {
        let value = value.as_deref()?;
        let mut needle = format!("\"{key}\":");
        crate::json::push_quoted(&mut needle, value);
        Some(needle)
    })
    .collect();
    for line in text.lines().rev() {
        if !needles.iter().all(|needle| line.contains(needle.as_str())) {
            continue;
        }
        if needles.is_empty() || fields_equal(line, filter) {
            found.push(line);
        }
    }
}

/// Whether the line's own fields are those `filter` asks for.
fn fields_equal(line: &str, filter: &Filter) -> bool {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(line)
    else {
        return false;
    };
    let equal = |key: &str, wanted: &Option<String>| {
        wanted
            .as_deref()
            .is_none_or(|wanted| fields.get(key).and_then(|value| value.as_str()) == Some(wanted))
    };
    equal("decision", &filter.decision)
        && equal("decision.reason", &filter.reason)
        && equal("rule.id", &filter.rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, decision: &str, reason: &str) -> String {
        format!(
            "{{\"timestamp\":\"2026-12-07T07:00:00.000Z\",\"decision\":\"{decision}\",\"request.id\":\"{id}\",\"decision.reason\":\"{reason}\",\"rule.id\":null,\"principal.claims\":{{\"request.id\":\"{id}x\",\"decision.reason\":\"{reason}x\"}}}}\n"
        )
    }

    fn batch(lines: &[String]) -> (String, usize) {
        (lines.concat(), lines.len())
    }

    #[test]
    fn lines_are_found_by_id_until_they_roll_out() {
        let recent = Recent::default();
        recent.resize(4);
        for first in [0, 2, 4] {
            let (text, lines) = batch(&[
                line(&format!("id{first}"), "deny", "missing_role"),
                line(&format!("id{}", first + 1), "allow", "allowed"),
            ]);
            recent.keep(text, lines);
        }
        assert_eq!(recent.len(), 4, "whole batches go, oldest first");
        assert!(recent.find("id0").is_none());
        assert!(recent.find("id1").is_none());
        let found = recent.find("id2").expect("kept");
        assert!(found.starts_with('{') && found.ends_with('}'), "{found}");
        assert!(found.contains("\"request.id\":\"id2\""));
        assert!(recent.find("id5").is_some());
        assert!(recent.find("id").is_none(), "an id is matched whole");
        assert!(
            recent.find("id3x").is_none(),
            "a claim named request.id is not the field"
        );
        recent.resize(0);
        assert!(recent.find("id5").is_none());
        recent.keep(batch(&[line("id6", "deny", "x")]).0, 1);
        assert!(recent.is_empty(), "log.recent: 0 keeps nothing");
    }

    #[test]
    fn the_ring_stays_within_its_bytes() {
        let recent = Recent::default();
        recent.resize(10);
        let long = "x".repeat(64 * 1024);
        for index in 0..20 {
            recent.keep(
                format!("{{\"request.id\":\"big{index}\",\"x\":\"{long}\"}}\n"),
                1,
            );
        }
        let ring = super::super::lock(&recent.ring);
        assert!(
            ring.bytes <= 10 * BYTES_PER_LINE + 70 * 1024,
            "{}",
            ring.bytes
        );
        assert_eq!(
            ring.chunks.len(),
            1,
            "only the newest over-large chunk stays"
        );
    }

    #[test]
    fn selection_reads_the_fields_not_text_alike() {
        let recent = Recent::default();
        recent.resize(100);
        let (text, lines) = batch(&[
            line("a", "deny", "missing_role"),
            line("b", "deny", "missing_scope"),
            line("c", "allow", "allowed"),
            line("d", "deny", "missing_role"),
        ]);
        recent.keep(text, lines);
        let ids = |filter: Filter, limit: usize| -> Vec<String> {
            recent
                .select(&filter, limit, &[])
                .iter()
                .map(|line| {
                    let value: serde_json::Value = serde_json::from_str(line).unwrap();
                    value["request.id"].as_str().unwrap().to_owned()
                })
                .collect()
        };
        let reason = |reason: &str| Filter {
            reason: Some(reason.to_owned()),
            ..Filter::default()
        };
        assert_eq!(ids(reason("missing_role"), 10), ["d", "a"]);
        assert_eq!(ids(reason("missing_role"), 1), ["d"]);
        assert_eq!(ids(Filter::default(), 10), ["d", "c", "b", "a"]);
        // Each line's claim is spelled like `decision.reason` with an `x` after.
        assert!(ids(reason("missing_rolex"), 10).is_empty());
        let denied = Filter {
            decision: Some("deny".to_owned()),
            reason: Some("missing_scope".to_owned()),
            rule: None,
        };
        assert_eq!(ids(denied, 10), ["b"]);
    }
}
