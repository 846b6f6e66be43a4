//! A small writer of MaxMind DB files (format 2.0), for tests and benches only.
//!
//! Format: <https://maxmind.github.io/MaxMind-DB/>. Search tree with 24-bit
//! records, a 16-byte zero separator, the data section, then the metadata
//! marker and the metadata map.
#![allow(
    dead_code,
    reason = "each crate that includes this file uses only part of it"
)]

use std::collections::HashMap;

use ipnet::IpNet;

/// A value in the data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A map with UTF-8 string keys, written in the order given.
    Map(Vec<(String, Value)>),
    /// A UTF-8 string.
    String(String),
    /// An unsigned 16-bit integer.
    U16(u16),
    /// An unsigned 32-bit integer.
    U32(u32),
    /// An unsigned 64-bit integer.
    U64(u64),
    /// An array of values.
    Array(Vec<Value>),
}

fn s(text: &str) -> Value {
    Value::String(text.to_string())
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A country map as GeoLite2 writes it, with fields a decoder must skip.
/// The geoname_id and names are made up from the code, not the real ones.
fn geo_country(code: &str) -> Value {
    let geoname_id = code.bytes().fold(2_000_000_u32, |id, b| {
        id.wrapping_mul(31).wrapping_add(u32::from(b))
    });
    let names = map(vec![
        ("de", s(&format!("Land {code}"))),
        ("en", s(&format!("Country {code}"))),
    ]);
    map(vec![
        ("geoname_id", Value::U32(geoname_id)),
        ("iso_code", s(code)),
        ("names", names),
    ])
}

/// The record of the MaxMind GeoLite2 / DB-IP Country layout:
/// `{continent: {...}, country: {iso_code, ...}, registered_country: {iso_code, ...}}`.
/// A `None` leaves that key out. The continent is always Europe, and geoname ids and
/// names are placeholders: they are there so that decoders must skip what they do not read.
pub fn maxmind_country(country: Option<&str>, registered_country: Option<&str>) -> Value {
    let continent_names = map(vec![("de", s("Europa")), ("en", s("Europe"))]);
    let continent = map(vec![
        ("code", s("EU")),
        ("geoname_id", Value::U32(6_255_148)),
        ("names", continent_names),
    ]);
    let mut pairs = vec![("continent", continent)];
    if let Some(code) = country {
        pairs.push(("country", geo_country(code)));
    }
    if let Some(code) = registered_country {
        pairs.push(("registered_country", geo_country(code)));
    }
    map(pairs)
}

/// The flat ip-location-db layout: `{country_code: "DE"}`.
pub fn flat_country(code: &str) -> Value {
    map(vec![("country_code", s(code))])
}

// Data section type numbers. Types above 7 are "extended": the control byte's type
// bits are 0 and the next byte holds type - 7.
const UTF8: u8 = 2;
const UINT16: u8 = 5;
const UINT32: u8 = 6;
const MAP: u8 = 7;
const UINT64: u8 = 9;
const ARRAY: u8 = 11;

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let type_bits = if kind <= 7 { kind << 5 } else { 0 };
    // Sizes of 29 and up take 1, 2 or 3 more bytes, each form starting where the
    // previous one ends (29, 29 + 256, 29 + 256 + 65536).
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..29 => (size as u8, vec![]),
        29..285 => (29, vec![(size - 29) as u8]),
        285..65_821 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => {
            let rest = u32::try_from(size - 65_821).expect("value too large for MMDB");
            assert!(rest < 1 << 24, "value too large for MMDB");
            (31, rest.to_be_bytes()[1..].to_vec())
        }
    };
    out.push(type_bits | size_bits);
    if kind > 7 {
        out.push(kind - 7);
    }
    // The size bytes come after the extended type byte.
    out.extend_from_slice(&extra);
}

fn encode_uint(out: &mut Vec<u8>, kind: u8, value: u64) {
    // Big-endian with leading zero bytes dropped; zero is written with size 0.
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    control(out, kind, bytes.len() - skip);
    out.extend_from_slice(&bytes[skip..]);
}

fn encode(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Map(pairs) => {
            control(out, MAP, pairs.len());
            for (key, value) in pairs {
                control(out, UTF8, key.len());
                out.extend_from_slice(key.as_bytes());
                encode(out, value);
            }
        }
        Value::String(text) => {
            control(out, UTF8, text.len());
            out.extend_from_slice(text.as_bytes());
        }
        Value::U16(n) => encode_uint(out, UINT16, u64::from(*n)),
        Value::U32(n) => encode_uint(out, UINT32, u64::from(*n)),
        Value::U64(n) => encode_uint(out, UINT64, *n),
        Value::Array(items) => {
            control(out, ARRAY, items.len());
            items.iter().for_each(|item| encode(out, item));
        }
    }
}

/// One side of a tree node.
#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(usize),
    /// An offset into the data section.
    Data(usize),
}

/// A whole database holding every network given (CIDR strings such as
/// `"81.2.69.0/24"` or `"2001:db8::/32"`); addresses outside them are not found.
///
/// By default the tree is IPv6 (`ip_version` 6) and IPv4 networks sit under `::/96`
/// (`::a.b.c.d`), which is where MaxMind's IPv6 databases hold IPv4 and where readers
/// look IPv4 addresses up. (The `::ffff:0:0/96` and `2002::/16` aliases of MaxMind's
/// databases are not written.) With `ipv4_only` the tree is IPv4 (`ip_version` 4) and
/// an IPv6 network panics. Networks may overlap: the more specific one wins for its
/// addresses; for the same network given twice, the later one wins. Identical records
/// are written to the data section once. Panics on a malformed CIDR.
pub fn database(
    networks: &[(&str, Value)],
    database_type: &str,
    build_epoch: u64,
    ipv4_only: bool,
) -> Vec<u8> {
    // The data section, each distinct record once.
    let mut data = Vec::new();
    let mut offsets: HashMap<Vec<u8>, usize> = HashMap::new();
    // (address bits left-aligned in a u128, prefix length in tree bits, data offset)
    let mut prefixes = Vec::new();
    for (cidr, value) in networks {
        let net: IpNet = cidr
            .parse()
            .unwrap_or_else(|e| panic!("bad network {cidr:?}: {e}"));
        let (bits, len) = match net.trunc() {
            IpNet::V4(v4) if ipv4_only => (u128::from(v4.addr().to_bits()) << 96, v4.prefix_len()),
            IpNet::V4(v4) => (u128::from(v4.addr().to_bits()), 96 + v4.prefix_len()),
            IpNet::V6(_) if ipv4_only => panic!("IPv6 network {cidr} in an IPv4-only database"),
            IpNet::V6(v6) => (v6.addr().to_bits(), v6.prefix_len()),
        };
        let mut bytes = Vec::new();
        encode(&mut bytes, value);
        let offset = *offsets.entry(bytes).or_insert_with_key(|bytes| {
            data.extend_from_slice(bytes);
            data.len() - bytes.len()
        });
        prefixes.push((bits, len, offset));
    }
    // Shorter prefixes first, so a more specific network is inserted later and
    // splits the leaf of the wider one it lies in (stable: equal networks keep order).
    prefixes.sort_by_key(|&(_, len, _)| len);

    // Node 0 is the root; the nodes are numbered as they are created.
    let mut nodes = vec![[Record::Empty; 2]];
    for (bits, len, offset) in prefixes {
        let bit = |i: u8| usize::from((bits >> (127 - i)) & 1 == 1);
        if len == 0 {
            nodes[0] = [Record::Data(offset); 2];
            continue;
        }
        let mut node = 0;
        for i in 0..len - 1 {
            let side = bit(i);
            node = match nodes[node][side] {
                Record::Node(next) => next,
                // A wider network (or nothing) covers this side: both halves inherit it.
                inherited => {
                    nodes.push([inherited; 2]);
                    nodes[node][side] = Record::Node(nodes.len() - 1);
                    nodes.len() - 1
                }
            };
        }
        // Any subtree here belongs to networks no more specific than this one, which
        // were all inserted earlier, so replacing it is the right result.
        nodes[node][bit(len - 1)] = Record::Data(offset);
    }

    let node_count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for record in node {
            // Data pointers count from the end of the tree, past the 16-byte separator.
            let value = match *record {
                Record::Empty => node_count,
                Record::Node(next) => next,
                Record::Data(offset) => node_count + 16 + offset,
            };
            let value = u32::try_from(value).ok().filter(|&v| v < 1 << 24);
            let value = value.expect("database too large for 24-bit records");
            out.extend_from_slice(&value.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let node_count = u32::try_from(node_count).expect("node count fits u32");
    let metadata = map(vec![
        ("binary_format_major_version", Value::U16(2)),
        ("binary_format_minor_version", Value::U16(0)),
        ("build_epoch", Value::U64(build_epoch)),
        ("database_type", s(database_type)),
        (
            "description",
            map(vec![("en", s("Test database written by testing::mmdb"))]),
        ),
        ("ip_version", Value::U16(if ipv4_only { 4 } else { 6 })),
        ("languages", Value::Array(vec![s("en")])),
        ("node_count", Value::U32(node_count)),
        ("record_size", Value::U16(24)),
    ]);
    encode(&mut out, &metadata);
    out
}
