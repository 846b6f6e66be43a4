//! Decision time for 10, 1,000 and 100,000 rules, and a 1,000,000-prefix network list:
//! load time, memory and lookup time. Goals (issue 3): median decision under 1 µs at
//! 1,000 rules and under 5 µs at 100,000; the list loads in under 2 s and answers a
//! lookup in under 200 ns.
//!
//!     cargo bench --bench decide

#![allow(
    clippy::unwrap_used,
    reason = "a benchmark whose fixed inputs do not parse should stop loudly"
)]

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ipnet::IpNet;
use portcullis::policy::{
    Condition, Effect, HeaderCondition, HostPattern, MethodSet, NetSet, Networks, PathGlob,
    PolicySet, RequestFacts, Rule, ValuePattern,
};

/// A mix of rule shapes, as a large deployment would have: per-service allows with
/// network conditions, host-scoped APIs, captured ids with a tenancy header, and deny
/// rules guarding admin paths.
fn rules(count: usize) -> Vec<Rule> {
    let office = Arc::new(NetSet::new(
        ["203.0.113.0/24", "198.51.100.0/24", "2001:db8::/32"]
            .iter()
            .map(|cidr| cidr.parse::<IpNet>().unwrap()),
    ));
    let office = Networks::new(vec![office], "@office");
    (0..count)
        .map(|n| {
            let mut rule = Rule::new(&format!("rule-{n}"), Effect::Allow);
            let service = n / 4;
            match n % 4 {
                0 => {
                    rule.effect = Effect::Deny;
                    rule.paths = vec![glob(&format!("/svc{service}/admin/**"))];
                    rule.when = vec![Condition::NotIp(office.clone())];
                }
                1 => {
                    rule.hosts = vec![HostPattern::Exact(format!("svc{service}.example.com"))];
                    rule.paths = vec![glob("/api/**")];
                }
                2 => {
                    rule.paths = vec![glob(&format!("/svc{service}/items/{{id}}"))];
                    rule.methods = Some(MethodSet::new(["GET", "PUT"]));
                    rule.when = vec![Condition::Header(HeaderCondition {
                        name: "x-tenant".to_owned(),
                        values: vec![ValuePattern::Exact(format!("tenant-{service}"))],
                    })];
                }
                _ => {
                    rule.paths = vec![glob(&format!("/svc{service}/**"))];
                    rule.methods = Some(MethodSet::new(["GET", "HEAD"]));
                    rule.when = vec![Condition::Ip(office.clone())];
                }
            }
            rule
        })
        .collect()
}

fn glob(text: &str) -> PathGlob {
    PathGlob::parse(text).unwrap()
}

fn decisions(c: &mut Criterion) {
    let office_ip: IpAddr = "203.0.113.9".parse().unwrap();
    let other_ip: IpAddr = "192.0.2.1".parse().unwrap();
    let mut group = c.benchmark_group("decide");
    for count in [10usize, 1_000, 100_000] {
        let set = PolicySet::new(rules(count));
        let service = count / 8;
        let item = format!("/svc{service}/items/42");
        let page = format!("/svc{service}/docs/guide");
        let admin = format!("/svc{service}/admin/users");
        let headers = [("x-tenant", format!("tenant-{service}"))];
        let header_pairs: Vec<(&str, &str)> =
            headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let cases: [(&str, &str, &str, IpAddr); 4] = [
            ("allow", "GET", &page, office_ip),
            ("allow-capture", "GET", &item, other_ip),
            ("deny-rule", "GET", &admin, other_ip),
            ("default-deny", "GET", "/nothing/here", other_ip),
        ];
        for (name, method, path, client_ip) in cases {
            let facts = RequestFacts {
                method,
                host: Some("gateway.example.com"),
                path,
                client_ip,
                headers: &header_pairs,
                principal: None,
                client_cert: None,
                country: None,
            };
            // The scenario decides the way its name says, or the benchmark measures nothing.
            let decision = set.evaluate(&facts);
            let expected = if name.starts_with("allow") {
                Effect::Allow
            } else {
                Effect::Deny
            };
            assert_eq!(decision.effect, expected, "{name} at {count} rules");
            group.bench_function(format!("{count}-rules/{name}"), |b| {
                b.iter(|| set.evaluate(black_box(&facts)))
            });
        }
    }
    group.finish();
}

/// One million distinct prefixes (mostly /24 and /32 IPv4, some IPv6 /48), one per line.
fn million_prefixes() -> String {
    let mut text = String::with_capacity(20 * 1_000_000);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for n in 0..1_000_000u32 {
        // xorshift: a fixed pseudo-random sequence, the same on every run.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bits = state as u32;
        match n % 10 {
            0 => text.push_str(&format!(
                "2001:db8:{:x}:{:x}::/64\n",
                bits >> 16,
                bits & 0xffff
            )),
            1..=3 => text.push_str(&format!(
                "{}.{}.{}.{}\n",
                bits >> 24,
                (bits >> 16) & 0xff,
                (bits >> 8) & 0xff,
                bits & 0xff
            )),
            _ => text.push_str(&format!(
                "{}.{}.{}.0/24\n",
                bits >> 24,
                (bits >> 16) & 0xff,
                (bits >> 8) & 0xff
            )),
        }
    }
    text
}

fn lists(c: &mut Criterion) {
    let text = million_prefixes();
    let mut group = c.benchmark_group("list-1m");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("load", |b| {
        b.iter(|| portcullis::config::parse_list_file(Path::new("bench.txt"), black_box(&text)))
    });
    group.finish();

    let (set, errors) = portcullis::config::parse_list_file(Path::new("bench.txt"), &text);
    assert!(errors.is_empty());
    println!(
        "list-1m: {} prefixes in {:.1} MiB of heap",
        set.prefixes(),
        set.heap_size() as f64 / (1024.0 * 1024.0)
    );
    let probes: Vec<IpAddr> = (0..1024u32)
        .map(|n| {
            let bits = n.wrapping_mul(2_654_435_761);
            if n % 8 == 0 {
                IpAddr::from([0x2001, 0xdb8, (bits >> 16) as u16, bits as u16, 0, 0, 0, 1])
            } else {
                IpAddr::from(bits.to_be_bytes())
            }
        })
        .collect();
    let mut group = c.benchmark_group("list-1m");
    let mut next = 0usize;
    group.bench_function("lookup", |b| {
        b.iter(|| {
            next = (next + 1) % probes.len();
            set.contains(black_box(probes[next]))
        })
    });
    group.finish();
}

criterion_group!(benches, decisions, lists);
criterion_main!(benches);
