//! Country lookups: one address in a full public database (IPv4 and IPv6), and what the
//! database costs in memory once loaded.
//!
//!     bash .ci/geoip-database.sh     # fetches the database once (cached in target/)
//!     cargo bench --bench geoip
//!
//! `PORTCULLIS_GEOIP_DATABASE` names another `.mmdb` file. Without either, a generated
//! database of a similar size stands in, and the figures say so.

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark whose fixed inputs do not work should stop loudly"
)]

#[path = "../src/testing/mmdb.rs"]
mod mmdb;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::geoip::{Database, Lookup};

/// The public database `.ci/geoip-database.sh` caches.
const CACHED: &str = "target/ci-tools/geoip/geo-whois-asn-country.mmdb";

/// A fixed xorshift sequence: the same addresses on every run.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The database to measure, and whether it is the real one.
fn database_file() -> (PathBuf, bool) {
    if let Some(path) = std::env::var_os("PORTCULLIS_GEOIP_DATABASE") {
        return (PathBuf::from(path), true);
    }
    let cached = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CACHED);
    if cached.exists() {
        return (cached, true);
    }
    // 200,000 IPv4 /20s and 50,000 IPv6 /32s over 50 countries: a tree as deep and wide
    // as a public database's.
    let codes = ["US", "DE", "GB", "FR", "JP", "BR", "IN", "CN", "AU", "ZA"];
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut networks = Vec::new();
    for index in 0..250_000u64 {
        let code = codes[(random.next() % codes.len() as u64) as usize];
        let network = if index < 200_000 {
            let base = (random.next() as u32) & 0xffff_f000;
            format!("{}/20", Ipv4Addr::from(base))
        } else {
            let base = ((random.next() as u128) << 96) & (0xffff_ffffu128 << 96);
            format!("{}/32", Ipv6Addr::from(base | (0x2000u128 << 112)))
        };
        networks.push((network, code));
    }
    let records: Vec<(&str, mmdb::Value)> = (networks.iter())
        .map(|(network, code)| (network.as_str(), mmdb::flat_country(code)))
        .collect();
    let path = std::env::temp_dir().join(format!("portcullis-bench-{}.mmdb", std::process::id()));
    std::fs::write(&path, mmdb::database(&records, "bench", 1, false)).unwrap();
    (path, false)
}

/// Resident memory of this process, in bytes.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = (statm.split_whitespace().nth(1))
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn lookups(c: &mut Criterion) {
    let (path, real) = database_file();
    let before = resident();
    let database = Database::open(&path).unwrap();
    let loaded = resident();
    let mut random = Xorshift(0x2545_f491_4f6c_dd1d);
    let v4: Vec<IpAddr> = (0..4096)
        .map(|_| IpAddr::V4(Ipv4Addr::from(random.next() as u32)))
        .collect();
    // In the five registries' IPv6 blocks (2400::/12 APNIC, 2600::/12 ARIN, 2800::/12
    // LACNIC, 2a00::/12 RIPE NCC, 2c00::/12 AFRINIC), where allocated networks are.
    let v6: Vec<IpAddr> = (0..4096)
        .map(|_| {
            let registry = [0x240u128, 0x260, 0x280, 0x2a0, 0x2c0][(random.next() % 5) as usize];
            let bits = (u128::from(random.next()) << 64) | u128::from(random.next());
            IpAddr::V6(Ipv6Addr::from((registry << 116) | (bits >> 12)))
        })
        .collect();
    let found = |addresses: &[IpAddr]| {
        (addresses.iter())
            .filter(|ip| matches!(database.lookup(**ip), Lookup::Found(_)))
            .count()
    };
    eprintln!(
        "database: {} ({}); {:.1} MiB resident after loading it ({:.1} MiB file); \
         {} of 4096 random IPv4 and {} of 4096 random IPv6 addresses found",
        path.display(),
        if real { "public" } else { "generated stand-in" },
        (loaded.saturating_sub(before)) as f64 / 1048576.0,
        std::fs::metadata(&path).map_or(0, |meta| meta.len()) as f64 / 1048576.0,
        found(&v4),
        found(&v6),
    );

    let mut group = c.benchmark_group("geoip");
    for (name, addresses) in [("lookup-ipv4", &v4), ("lookup-ipv6", &v6)] {
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % addresses.len();
                black_box(database.lookup(black_box(addresses[next])))
            })
        });
    }
    group.sample_size(10);
    group.bench_function("open", |b| {
        b.iter(|| black_box(Database::open(&path).unwrap()))
    });
    group.finish();
    if !real {
        let _ = std::fs::remove_file(&path);
    }
}

criterion_group!(benches, lookups);
criterion_main!(benches);
