//! The client's country, for `countries` and `not_countries` conditions: from a header a
//! trusted proxy sets (`CF-IPCountry`), or from a MaxMind DB country database read into
//! memory (GeoLite2 / GeoIP2, DB-IP, ip-location-db).
//!
//! A database that is configured but did not load leaves the country unknown to the
//! policy (`None`), which fails allow rules and holds for deny rules; an address the
//! loaded database does not know is `XX`, a country like any other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use maxminddb::Reader;

use crate::config::GeoipSettings;
use crate::policy::Country;

/// A country database in memory.
pub struct Database {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
    stamp: Stamp,
    /// What records already read said, by where they are in the data section.
    records: RecordCache,
}

/// The country of records already decoded, by their offset in the data section. A
/// country database holds a few hundred distinct records, shared by a million networks:
/// decoding one costs more than walking the tree to it, and this makes it a load.
///
/// Direct-mapped and lock-free: each slot is one `u64` holding the offset (plus one, so
/// that 0 is empty) and the answer; a reader checks the offset before believing a slot.
/// Workers write a slot only on a miss, so in the steady state they share it read-only.
struct RecordCache {
    slots: Box<[AtomicU64]>,
}

/// Slots in a [`RecordCache`]: a power of two, several times the records of a database.
const RECORD_SLOTS: usize = 4096;

/// The answer part of a slot for "no country in this record".
const NO_COUNTRY: u64 = 0xffff;

impl RecordCache {
    fn new() -> RecordCache {
        RecordCache {
            slots: (0..RECORD_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, offset: u64) -> &AtomicU64 {
        // Fibonacci hashing: offsets are multiples of small record sizes.
        let index = (offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize;
        &self.slots[index % RECORD_SLOTS]
    }

    fn get(&self, offset: u64) -> Option<Lookup> {
        let entry = self.slot(offset).load(Ordering::Relaxed);
        if entry >> 32 != offset + 1 {
            return None;
        }
        let [.., a, b] = entry.to_be_bytes();
        Some(match entry & 0xffff {
            NO_COUNTRY => Lookup::Unknown,
            _ => Country::from_reported(&[a, b]).map_or(Lookup::Unknown, Lookup::Found),
        })
    }

    fn put(&self, offset: u64, lookup: Lookup) {
        let answer = match lookup {
            Lookup::Found(country) => {
                let [a, b] = country.as_str().as_bytes() else {
                    return;
                };
                u64::from(u16::from_be_bytes([*a, *b]))
            }
            Lookup::Unknown => NO_COUNTRY,
            Lookup::Failed => return,
        };
        self.slot(offset)
            .store(((offset + 1) << 32) | answer, Ordering::Relaxed);
    }
}

/// What tells one version of a file from another without reading it: a new file written
/// and renamed over the old, or a ConfigMap's `..data` swap, changes its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
    /// The inode's change time: a copy over the file that keeps its length and mtime
    /// (`cp -p`) still changes it.
    changed: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
            changed: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// Well-known public addresses (resolvers, MaxMind's own test address) that every full
/// database places: to tell a country database from another kind, and to see which
/// address families it covers.
const PROBES_V4: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
    IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9)),
    IpAddr::V4(Ipv4Addr::new(81, 2, 69, 142)),
];
const PROBES_V6: [IpAddr; 3] = [
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888)),
    IpAddr::V6(Ipv6Addr::new(0x2606, 0x4700, 0x4700, 0, 0, 0, 0, 0x1111)),
    IpAddr::V6(Ipv6Addr::new(0x2a00, 0x1450, 0x4001, 0, 0, 0, 0, 1)),
];

/// The largest database read: GeoIP2 Enterprise is under 1 GiB, and record offsets past
/// 4 GiB would not fit the record cache's slots.
const MAX_DATABASE_BYTES: u64 = 2 << 30;

/// The fields of a record that name a country, in both layouts in public use.
#[derive(serde::Deserialize)]
struct Record<'a> {
    /// GeoLite2, GeoIP2 and DB-IP: where the address is.
    #[serde(borrow)]
    country: Option<Named<'a>>,
    /// GeoLite2, GeoIP2 and DB-IP: where the network is registered, when the first is
    /// missing (anycast, satellite providers).
    #[serde(borrow)]
    registered_country: Option<Named<'a>>,
    /// ip-location-db: one flat code.
    #[serde(borrow)]
    country_code: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

impl Record<'_> {
    fn code(&self) -> Option<&str> {
        (self.country.as_ref().and_then(|named| named.iso_code))
            .or_else(|| (self.registered_country.as_ref()).and_then(|named| named.iso_code))
            .or(self.country_code)
    }
}

/// What a database said of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Its record names this country.
    Found(Country),
    /// The database has no record for it, or one without a country.
    Unknown,
    /// The record could not be read.
    Failed,
}

impl Database {
    /// Reads and checks a database: its metadata and layout, and that its records name
    /// countries. (The crate's full `verify` refuses public databases over metadata that
    /// lookups never read, such as an empty description; a damaged record is met by a
    /// lookup, which then fails closed.)
    pub fn open(path: &Path) -> Result<Database, String> {
        use std::io::Read as _;
        let stamp = Stamp::of(path).unwrap_or_default();
        let mut file = std::fs::File::open(path).map_err(|err| format!("cannot read it: {err}"))?;
        let meta = file
            .metadata()
            .map_err(|err| format!("cannot read it: {err}"))?;
        // A device or a pipe would be read forever (and a reload with it).
        if !meta.is_file() {
            return Err("it is not a regular file".to_owned());
        }
        if meta.len() > MAX_DATABASE_BYTES {
            return Err(format!(
                "it is {} MiB; the most read is {} MiB",
                meta.len() >> 20,
                MAX_DATABASE_BYTES >> 20
            ));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        (&mut file)
            .take(MAX_DATABASE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| format!("cannot read it: {err}"))?;
        if bytes.len() as u64 > MAX_DATABASE_BYTES {
            return Err("it grew past the most read while it was read".to_owned());
        }
        let reader = Reader::from_source(bytes)
            .map_err(|err| format!("it is not a MaxMind DB (.mmdb) file: {err}"))?;
        let database = Database {
            reader,
            records: RecordCache::new(),
            path: path.to_owned(),
            stamp,
        };
        database.check_countries()?;
        Ok(database)
    }

    /// Whether the database has a record for `ip`, naming a country or not.
    fn has_record(&self, ip: IpAddr) -> bool {
        (self.reader.lookup(ip).ok()).is_some_and(|found| found.has_data())
    }

    /// What the database cannot tell, when it covers one address family only: the other
    /// family's clients are all `XX`, so deny rules by country never stop them.
    pub fn coverage_warning(&self) -> Option<String> {
        let knows = |probes: &[IpAddr]| probes.iter().any(|ip| self.has_record(*ip));
        let v4 = knows(&PROBES_V4);
        let v6 = self.reader.metadata().ip_version == 6 && knows(&PROBES_V6);
        match (v4, v6) {
            (true, false) => Some("it knows no IPv6 networks: every IPv6 client is XX"),
            (false, true) => Some("it knows no IPv4 networks: every IPv4 client is XX"),
            _ => None,
        }
        .map(str::to_owned)
    }

    /// Refuses a database of another kind (ASN, ISP) whose records name no country: with
    /// it every address would be `XX`. Looks at a few well-known public addresses; a
    /// database that knows none of them (a private or test one) is taken as it is.
    fn check_countries(&self) -> Result<(), String> {
        let probes = PROBES_V4.iter().chain(&PROBES_V6);
        let with_records: Vec<IpAddr> =
            probes.filter(|ip| self.has_record(**ip)).copied().collect();
        if with_records.is_empty()
            || (with_records.iter()).any(|ip| matches!(self.lookup(*ip), Lookup::Found(_)))
        {
            return Ok(());
        }
        Err(format!(
            "its records name no country (database type \"{}\"); use a country database",
            self.reader.metadata().database_type
        ))
    }

    /// The country of `ip`. An IPv4-mapped IPv6 address is looked up as the IPv4 address
    /// it carries; an IPv6 address in an IPv4-only database is unknown.
    pub fn lookup(&self, ip: IpAddr) -> Lookup {
        let ip = ip.to_canonical();
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return Lookup::Unknown;
        }
        let Ok(found) = self.reader.lookup(ip) else {
            return Lookup::Failed;
        };
        // Offsets past 32 bits (a database over 4 GiB) are decoded every time.
        let offset = (found.offset())
            .and_then(|offset| u64::try_from(offset).ok())
            .filter(|offset| *offset < u64::from(u32::MAX));
        if let Some(known) = offset.and_then(|offset| self.records.get(offset)) {
            return known;
        }
        let lookup = match found.decode::<Record<'_>>() {
            Ok(None) => Lookup::Unknown,
            Ok(Some(record)) => record
                .code()
                .and_then(|code| Country::from_reported(code.as_bytes()))
                .map_or(Lookup::Unknown, Lookup::Found),
            Err(_) => Lookup::Failed,
        };
        if let Some(offset) = offset {
            self.records.put(offset, lookup);
        }
        lookup
    }

    /// When the database was built (seconds since the epoch), as its metadata says.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file at `path` is still the one read.
    fn is_current(&self, path: &Path) -> bool {
        self.path == path && Stamp::of(path) == Some(self.stamp)
    }
}

/// Where a request's country came from, and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    /// No rule names countries: nobody asked.
    NotAsked,
    /// A trusted proxy's header said so.
    Header(Country),
    /// Named for an offline decision (`explain --country`, a test case's `country`).
    Given(Country),
    /// The database said so (`Lookup::Unknown` is `XX`).
    Database(Lookup),
    /// No database is loaded (or none is configured) and no trusted header said.
    Unavailable,
}

impl Located {
    /// The country the policy sees: `None` when it could not be found out.
    pub fn country(self) -> Option<Country> {
        match self {
            Located::Header(country)
            | Located::Given(country)
            | Located::Database(Lookup::Found(country)) => Some(country),
            Located::Database(Lookup::Unknown) => Some(Country::UNKNOWN),
            Located::Database(Lookup::Failed) | Located::Unavailable | Located::NotAsked => None,
        }
    }

    /// The `result` label of `portcullis_geoip_lookups_total` when a database was asked,
    /// or should have been.
    pub fn lookup_result(self) -> Option<LookupResult> {
        match self {
            Located::Database(Lookup::Found(_)) => Some(LookupResult::Found),
            Located::Database(Lookup::Unknown) => Some(LookupResult::Unknown),
            Located::Database(Lookup::Failed) | Located::Unavailable => Some(LookupResult::Error),
            Located::Header(_) | Located::Given(_) | Located::NotAsked => None,
        }
    }
}

/// The `result` label of `portcullis_geoip_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// The database named a country.
    Found,
    /// It did not know the address (`XX`).
    Unknown,
    /// No database could be asked, or the record could not be read.
    Error,
}

impl LookupResult {
    /// Every value, in label order.
    pub const ALL: [LookupResult; 3] = [
        LookupResult::Found,
        LookupResult::Unknown,
        LookupResult::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LookupResult::Found => "found",
            LookupResult::Unknown => "unknown",
            LookupResult::Error => "error",
        }
    }
}

/// The country setup of one load of the config: the database serving (carried over
/// from the load before while its file is unchanged), and the header.
#[derive(Default)]
pub struct Geo {
    database: Option<Arc<Database>>,
    /// The configured database file.
    configured: Option<PathBuf>,
    /// Why the configured file is not the one serving, when it is not.
    problem: Option<String>,
    header: Option<HeaderName>,
    /// The proxies whose word in `header` is believed.
    header_from: Vec<IpNet>,
    keep_untrusted_header: bool,
    /// Every address is in this country (`explain --country`).
    fixed: Option<Country>,
    /// What loading it did, for the log.
    notes: Vec<Note>,
}

/// What [`Geo::load`] did, for the log.
enum Note {
    /// A database was read; it was built then.
    Loaded(u64),
    Warning(String),
    Error(String),
}

impl Geo {
    /// The setup of `settings`, reading the database unless `previous` has read the same
    /// file. A file that does not load keeps the previous load's database, if it had one;
    /// either way the problem is logged and kept for `/readyz` and `/policy`. Reads the
    /// file: call it off the request path.
    pub fn load(settings: Option<&GeoipSettings>, previous: Option<&Geo>) -> Geo {
        let Some(settings) = settings else {
            return Geo::default();
        };
        let mut geo = Geo {
            configured: settings.database.clone(),
            header: settings.header.clone(),
            header_from: settings.header_from.clone(),
            keep_untrusted_header: settings.keep_untrusted_header,
            ..Geo::default()
        };
        let Some(path) = &settings.database else {
            return geo;
        };
        let kept = previous.and_then(|previous| previous.database.as_ref());
        if let Some(database) = kept.filter(|database| database.is_current(path)) {
            geo.database = Some(Arc::clone(database));
            return geo;
        }
        match Database::open(path) {
            Ok(database) => {
                geo.notes.push(Note::Loaded(database.build_epoch()));
                if let Some(warning) = database.coverage_warning() {
                    geo.notes.push(Note::Warning(format!(
                        "geo database {}: {warning}",
                        path.display()
                    )));
                }
                geo.database = Some(Arc::new(database));
            }
            Err(problem) => {
                let problem = format!("geo database {} did not load: {problem}", path.display());
                let consequence = match kept {
                    Some(database) => format!(
                        "{problem}; still serving {} (built {})",
                        database.path().display(),
                        database.build_epoch()
                    ),
                    None => format!(
                        "{problem}; countries and not_countries conditions fail closed until it loads"
                    ),
                };
                geo.notes.push(Note::Error(consequence));
                geo.database = kept.cloned();
                geo.problem = Some(problem);
            }
        }
        geo
    }

    /// Logs what [`Geo::load`] did: a database read, a warning about it, or why it did
    /// not load. The gateway calls it; offline commands print [`Geo::warnings`] instead.
    pub fn log(&self) {
        for note in &self.notes {
            match note {
                Note::Loaded(epoch) => tracing::info!(
                    geoip.database = %self.configured.as_deref().unwrap_or(Path::new("")).display(),
                    geoip.build_epoch = epoch,
                    "country database loaded"
                ),
                Note::Warning(text) => tracing::warn!("{text}"),
                Note::Error(text) => tracing::error!("{text}"),
            }
        }
    }

    /// What [`Geo::load`] found wrong, in words: warnings and errors.
    pub fn warnings(&self) -> impl Iterator<Item = &str> {
        self.notes.iter().filter_map(|note| match note {
            Note::Loaded(_) => None,
            Note::Warning(text) | Note::Error(text) => Some(text.as_str()),
        })
    }

    /// A setup that puts every address in `country`, for `explain --country` and test
    /// cases that name one; the header is handled as `settings` say.
    pub fn fixed(country: Country, settings: Option<&GeoipSettings>) -> Geo {
        Geo {
            fixed: Some(country),
            header: settings.and_then(|settings| settings.header.clone()),
            header_from: (settings.map(|settings| settings.header_from.clone()))
                .unwrap_or_default(),
            keep_untrusted_header: settings.is_some_and(|settings| settings.keep_untrusted_header),
            ..Geo::default()
        }
    }

    /// The country the configured header reports, when it is believed: it comes from the
    /// proxy that took the client's connection (`accepted_by`), which must be one of
    /// `header_from`, and holds one well-formed code.
    pub fn reported(&self, headers: &HeaderMap, accepted_by: IpAddr) -> Option<Country> {
        let name = self.header.as_ref()?;
        let accepted_by = accepted_by.to_canonical();
        if !self
            .header_from
            .iter()
            .any(|net| net.contains(&accepted_by))
        {
            return None;
        }
        reported(headers, name)
    }

    /// Where the request from `client_ip` is: what the header reported (see
    /// [`Geo::reported`]), or else what the database says.
    pub fn locate(&self, client_ip: IpAddr, reported: Option<Country>) -> Located {
        if let Some(country) = self.fixed {
            return Located::Given(country);
        }
        if let Some(country) = reported {
            return Located::Header(country);
        }
        match &self.database {
            Some(database) => Located::Database(database.lookup(client_ip)),
            None => Located::Unavailable,
        }
    }

    /// The header to remove from a request whose header was not believed (see
    /// [`Geo::reported`]), so that the upstream cannot be fooled by it either.
    pub fn unbelieved_header(&self) -> Option<&HeaderName> {
        self.header.as_ref().filter(|_| !self.keep_untrusted_header)
    }

    /// The database serving, if any.
    pub fn database(&self) -> Option<&Arc<Database>> {
        self.database.as_ref()
    }

    /// Why no database serves although one is configured, for `/readyz`.
    pub fn unavailable(&self) -> Option<&str> {
        match (&self.database, &self.configured) {
            (None, Some(_)) => self.problem.as_deref(),
            _ => None,
        }
    }

    /// Why the configured file is not the one serving, if it is not.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// What `/policy` shows of the database, when one is configured.
    pub fn status(&self) -> Option<GeoStatus> {
        let configured = self.configured.as_ref()?;
        Some(GeoStatus {
            database: configured.display().to_string(),
            serving: (self.database.as_ref()).map(|database| database.path().display().to_string()),
            build_epoch: self
                .database
                .as_ref()
                .map(|database| database.build_epoch()),
            problem: self.problem.clone(),
        })
    }
}

/// The country database as `/policy` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeoStatus {
    /// The configured file.
    pub database: String,
    /// The file whose database serves lookups: the configured one, or the last good one
    /// when the configured one did not load; `None` when none serves.
    pub serving: Option<String>,
    /// When the database serving was built (seconds since the epoch).
    pub build_epoch: Option<u64>,
    /// Why the configured file is not the one serving.
    pub problem: Option<String>,
}

/// The country a proxy reports in header `name`: one field of two letters or digits
/// (any case). Anything else is not believed.
fn reported(headers: &HeaderMap, name: &HeaderName) -> Option<Country> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    Country::from_reported(value.as_bytes().trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ScratchDir, mmdb};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn country(code: &str) -> Lookup {
        Lookup::Found(Country::parse(code).unwrap())
    }

    /// A database that knows one network, 81.2.69.0/24, in GB.
    fn gb_only() -> Vec<u8> {
        mmdb::database(&[("81.2.69.0/24", mmdb::flat_country("GB"))], "t", 1, false)
    }

    fn written(bytes: &[u8]) -> (ScratchDir, PathBuf) {
        let dir = ScratchDir::new();
        let path = dir.path().join("countries.mmdb");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn both_layouts_ipv4_ipv6_and_mapped_addresses() {
        let maxmind = mmdb::database(
            &[
                (
                    "81.2.69.0/24",
                    mmdb::maxmind_country(Some("GB"), Some("GB")),
                ),
                ("2001:db8::/32", mmdb::maxmind_country(Some("DE"), None)),
                // Anycast: registered country only.
                ("192.0.2.0/24", mmdb::maxmind_country(None, Some("US"))),
                ("198.51.100.0/24", mmdb::maxmind_country(None, None)),
            ],
            "GeoLite2-Country",
            1_700_000_000,
            false,
        );
        let flat = mmdb::database(
            &[
                ("81.2.69.0/24", mmdb::flat_country("GB")),
                ("2001:db8::/32", mmdb::flat_country("de")),
            ],
            "geo-whois-asn-country",
            1_700_000_000,
            false,
        );
        for bytes in [maxmind, flat] {
            let (_dir, path) = written(&bytes);
            let database = Database::open(&path).unwrap();
            assert_eq!(database.build_epoch(), 1_700_000_000);
            for (address, expected) in [
                ("81.2.69.142", country("GB")),
                ("::ffff:81.2.69.142", country("GB")),
                ("2001:db8::1", country("DE")),
                ("81.2.70.1", Lookup::Unknown),
                ("10.0.0.1", Lookup::Unknown),
                ("2001:db9::1", Lookup::Unknown),
            ] {
                assert_eq!(database.lookup(ip(address)), expected, "{address}");
            }
        }
        let (_dir, path) = written(&mmdb::database(
            &[
                ("192.0.2.0/24", mmdb::maxmind_country(None, Some("US"))),
                ("198.51.100.0/24", mmdb::maxmind_country(None, None)),
            ],
            "GeoLite2-Country",
            1,
            false,
        ));
        let database = Database::open(&path).unwrap();
        assert_eq!(database.lookup(ip("192.0.2.1")), country("US"));
        assert_eq!(database.lookup(ip("198.51.100.1")), Lookup::Unknown);
    }

    #[test]
    fn repeated_lookups_answer_from_the_record_cache_as_the_records_say() {
        // 1,296 networks with a record each, more than the cache's slots hold without
        // collisions: every answer, first and cached, must be its own record's.
        let symbols = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let codes: Vec<String> = (symbols.iter())
            .flat_map(|a| {
                symbols
                    .iter()
                    .map(move |b| String::from_utf8(vec![*a, *b]).unwrap())
            })
            .collect();
        let networks: Vec<(String, mmdb::Value)> = (codes.iter().enumerate())
            .map(|(index, code)| {
                let network = format!("10.{}.{}.0/24", index / 256, index % 256);
                let record = if index % 2 == 0 {
                    mmdb::flat_country(code)
                } else {
                    mmdb::maxmind_country(Some(code), None)
                };
                (network, record)
            })
            .collect();
        let records: Vec<(&str, mmdb::Value)> = (networks.iter())
            .map(|(network, record)| (network.as_str(), record.clone()))
            .collect();
        let (_dir, path) = written(&mmdb::database(&records, "t", 1, false));
        let database = Database::open(&path).unwrap();
        for _ in 0..3 {
            for (index, code) in codes.iter().enumerate() {
                let address = ip(&format!("10.{}.{}.9", index / 256, index % 256));
                assert_eq!(
                    database.lookup(address),
                    Lookup::Found(Country::from_reported(code.as_bytes()).unwrap()),
                    "{address}"
                );
            }
            assert_eq!(database.lookup(ip("11.0.0.1")), Lookup::Unknown);
        }
    }

    #[test]
    fn an_ipv4_only_database_does_not_know_ipv6_addresses() {
        let (_dir, path) = written(&mmdb::database(
            &[("81.2.69.0/24", mmdb::flat_country("GB"))],
            "test",
            1,
            true,
        ));
        let database = Database::open(&path).unwrap();
        assert_eq!(database.lookup(ip("81.2.69.1")), country("GB"));
        assert_eq!(database.lookup(ip("::ffff:81.2.69.1")), country("GB"));
        assert_eq!(database.lookup(ip("2001:db8::1")), Lookup::Unknown);
    }

    #[test]
    fn files_that_are_not_country_databases_are_refused() {
        let good = gb_only();
        let asn = mmdb::database(
            &[(
                "8.8.8.0/24",
                mmdb::Value::Map(vec![(
                    "autonomous_system_number".to_owned(),
                    mmdb::Value::U32(15169),
                )]),
            )],
            "GeoLite2-ASN",
            1,
            false,
        );
        for (bytes, needle) in [
            (b"not a database".to_vec(), "not a MaxMind DB"),
            (good[..good.len() / 2].to_vec(), "not a MaxMind DB"),
            (asn, "name no country"),
        ] {
            let (_dir, path) = written(&bytes);
            let err = Database::open(&path).err().unwrap();
            assert!(err.contains(needle), "{err}");
        }
        let err = Database::open(Path::new("/nonexistent/countries.mmdb"))
            .err()
            .unwrap();
        assert!(err.contains("cannot read it"), "{err}");
        let dir = ScratchDir::new();
        for odd in [Path::new("/dev/zero"), dir.path()] {
            let err = Database::open(odd).err().unwrap();
            assert!(
                err.contains("not a regular file"),
                "{}: {err}",
                odd.display()
            );
        }
    }

    #[test]
    fn a_database_of_one_address_family_is_said_to_be() {
        let one_family = |networks: &[(&str, mmdb::Value)], ipv4_only| {
            let (_dir, path) = written(&mmdb::database(networks, "t", 1, ipv4_only));
            Database::open(&path).unwrap().coverage_warning()
        };
        let v4 = ("8.8.8.0/24", mmdb::flat_country("US"));
        let v6 = ("2001:4860::/32", mmdb::flat_country("US"));
        assert!(
            one_family(std::slice::from_ref(&v4), true)
                .unwrap()
                .contains("no IPv6")
        );
        assert!(
            one_family(std::slice::from_ref(&v4), false)
                .unwrap()
                .contains("no IPv6")
        );
        assert!(
            one_family(std::slice::from_ref(&v6), false)
                .unwrap()
                .contains("no IPv4")
        );
        assert_eq!(one_family(&[v4, v6], false), None);
        // A private or test database knows none of the probes: nothing to say.
        assert_eq!(
            one_family(&[("10.0.0.0/8", mmdb::flat_country("DE"))], false),
            None
        );
    }

    #[test]
    fn a_reload_keeps_an_unchanged_database_and_the_old_one_when_the_new_fails() {
        let (_dir, path) = written(&gb_only());
        let settings = GeoipSettings {
            database: Some(path.clone()),
            header: None,
            header_from: Vec::new(),
            keep_untrusted_header: false,
        };
        let first = Geo::load(Some(&settings), None);
        assert!(first.unavailable().is_none());
        let same = Geo::load(Some(&settings), Some(&first));
        assert!(Arc::ptr_eq(
            same.database().unwrap(),
            first.database().unwrap()
        ));
        // A new file written elsewhere and renamed over the old one.
        let next = path.with_extension("new");
        std::fs::write(&next, b"garbage").unwrap();
        std::fs::rename(&next, &path).unwrap();
        let broken = Geo::load(Some(&settings), Some(&same));
        assert!(Arc::ptr_eq(
            broken.database().unwrap(),
            first.database().unwrap()
        ));
        assert!(broken.problem().unwrap().contains("did not load"));
        assert!(broken.unavailable().is_none());
        // Without a database before it, a broken file leaves none serving.
        let none = Geo::load(Some(&settings), None);
        assert!(none.database().is_none());
        assert!(none.unavailable().unwrap().contains("did not load"));
        assert_eq!(none.locate(ip("81.2.69.1"), None), Located::Unavailable);
        assert_eq!(Located::Unavailable.country(), None);
    }

    #[test]
    fn the_header_is_believed_only_from_the_proxies_that_set_it_and_when_well_formed() {
        let (_dir, path) = written(&gb_only());
        let settings = GeoipSettings {
            database: Some(path),
            header: Some(HeaderName::from_static("cf-ipcountry")),
            header_from: vec!["10.0.0.0/8".parse().unwrap()],
            keep_untrusted_header: false,
        };
        let geo = Geo::load(Some(&settings), None);
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("cf-ipcountry", value.parse().unwrap());
            }
            headers
        };
        let (cdn, elsewhere) = (ip("10.0.0.2"), ip("192.0.2.1"));
        let de = Some(Country::parse("DE").unwrap());
        assert_eq!(geo.reported(&with(&["DE"]), cdn), de);
        assert_eq!(geo.reported(&with(&[" de "]), ip("::ffff:10.0.0.2")), de);
        assert_eq!(geo.reported(&with(&["DE"]), elsewhere), None);
        for odd in [&["DEU"][..], &["DE", "FR"], &["DE, FR"], &[""], &[]] {
            assert_eq!(geo.reported(&with(odd), cdn), None, "{odd:?}");
        }
        let client = ip("81.2.69.1");
        assert_eq!(
            geo.locate(client, de),
            Located::Header(Country::parse("DE").unwrap())
        );
        assert_eq!(geo.locate(client, None), Located::Database(country("GB")));
        assert_eq!(
            geo.unbelieved_header().map(HeaderName::as_str),
            Some("cf-ipcountry")
        );
        let fixed = Geo::fixed(Country::parse("FR").unwrap(), Some(&settings));
        assert_eq!(
            fixed.locate(client, de),
            Located::Given(Country::parse("FR").unwrap())
        );
        assert_eq!(fixed.reported(&with(&["DE"]), cdn), de);
        assert_eq!(
            fixed.unbelieved_header().map(HeaderName::as_str),
            Some("cf-ipcountry")
        );
    }
}
