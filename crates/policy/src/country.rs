//! Country conditions (`countries`, `not_countries`): ISO 3166-1 alpha-2 codes, and sets
//! of them as one bit per code, so a lookup is a shift and a mask.

use std::fmt;

/// Every officially assigned ISO 3166-1 alpha-2 code, in order (from Debian's iso-codes).
const ASSIGNED: &str = "\
    ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZCACCCD\
    CFCGCHCICKCLCMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERESETFIFJFKFMFOFRGAGBGDGEGF\
    GGGHGIGLGMGNGPGQGRGSGTGUGWGYHKHMHNHRHTHUIDIEILIMINIOIQIRISITJEJMJOJPKEKGKHKIKMKN\
    KPKRKWKYKZLALBLCLILKLRLSLTLULVLYMAMCMDMEMFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZNA\
    NCNENFNGNINLNONPNRNUNZOMPAPEPFPGPHPKPLPMPNPRPSPTPWPYQARERORSRURWSASBSCSDSESGSHSI\
    SJSKSLSMSNSOSRSSSTSVSXSYSZTCTDTFTGTHTJTKTLTMTNTOTRTTTVTWTZUAUGUMUSUYUZVAVCVEVGVI\
    VNVUWFWSYEYTZAZMZW";

/// Codes a policy may name besides the assigned ones: `XX` (a loaded database does not know
/// the address), `XK` (Kosovo, user-assigned, used by MaxMind, DB-IP and ip-location-db) and
/// `T1` (Cloudflare's `CF-IPCountry` for Tor exits).
const EXTRA: [&str; 3] = ["XX", "XK", "T1"];

/// Each assigned alpha-3 code followed by its alpha-2 code (`DEUDE`), for did-you-mean.
const ALPHA3: &str = "\
    ABWAWAFGAFAGOAOAIAAIALAAXALBALANDADAREAEARGARARMAMASMASATAAQATFTFATGAGAUSAUAUTAT\
    AZEAZBDIBIBELBEBENBJBESBQBFABFBGDBDBGRBGBHRBHBHSBSBIHBABLMBLBLRBYBLZBZBMUBMBOLBO\
    BRABRBRBBBBRNBNBTNBTBVTBVBWABWCAFCFCANCACCKCCCHECHCHLCLCHNCNCIVCICMRCMCODCDCOGCG\
    COKCKCOLCOCOMKMCPVCVCRICRCUBCUCUWCWCXRCXCYMKYCYPCYCZECZDEUDEDJIDJDMADMDNKDKDOMDO\
    DZADZECUECEGYEGERIERESHEHESPESESTEEETHETFINFIFJIFJFLKFKFRAFRFROFOFSMFMGABGAGBRGB\
    GEOGEGGYGGGHAGHGIBGIGINGNGLPGPGMBGMGNBGWGNQGQGRCGRGRDGDGRLGLGTMGTGUFGFGUMGUGUYGY\
    HKGHKHMDHMHNDHNHRVHRHTIHTHUNHUIDNIDIMNIMINDINIOTIOIRLIEIRNIRIRQIQISLISISRILITAIT\
    JAMJMJEYJEJORJOJPNJPKAZKZKENKEKGZKGKHMKHKIRKIKNAKNKORKRKWTKWLAOLALBNLBLBRLRLBYLY\
    LCALCLIELILKALKLSOLSLTULTLUXLULVALVMACMOMAFMFMARMAMCOMCMDAMDMDGMGMDVMVMEXMXMHLMH\
    MKDMKMLIMLMLTMTMMRMMMNEMEMNGMNMNPMPMOZMZMRTMRMSRMSMTQMQMUSMUMWIMWMYSMYMYTYTNAMNA\
    NCLNCNERNENFKNFNGANGNICNINIUNUNLDNLNORNONPLNPNRUNRNZLNZOMNOMPAKPKPANPAPCNPNPERPE\
    PHLPHPLWPWPNGPGPOLPLPRIPRPRKKPPRTPTPRYPYPSEPSPYFPFQATQAREUREROURORUSRURWARWSAUSA\
    SDNSDSENSNSGPSGSGSGSSHNSHSJMSJSLBSBSLESLSLVSVSMRSMSOMSOSPMPMSRBRSSSDSSSTPSTSURSR\
    SVKSKSVNSISWESESWZSZSXMSXSYCSCSYRSYTCATCTCDTDTGOTGTHATHTJKTJTKLTKTKMTMTLSTLTONTO\
    TTOTTTUNTNTURTRTUVTVTWNTWTZATZUGAUGUKRUAUMIUMURYUYUSAUSUZBUZVATVAVCTVCVENVEVGBVG\
    VIRVIVNMVNVUTVUWLFWFWSMWSYEMYEZAFZAZMBZMZWEZW";

/// Codes people write for a country that has another one, with the code meant.
const MISTAKEN: [(&str, &str); 12] = [
    ("UK", "GB"),
    ("EL", "GR"),
    ("SU", "RU"),
    ("YU", "RS"),
    ("CS", "RS"),
    ("ZR", "CD"),
    ("TP", "TL"),
    ("BU", "MM"),
    ("DD", "DE"),
    ("FX", "FR"),
    ("EN", "GB"),
    ("KV", "XK"),
];

/// A country as two characters: an ISO 3166-1 alpha-2 code, `XX` for an address a loaded
/// database does not know, or another code a database or a trusted proxy reports.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// An address the loaded database does not know.
    pub const UNKNOWN: Country = Country(*b"XX");

    /// A code as a database or a proxy reports it: two ASCII letters or digits, any case.
    /// Not checked against ISO 3166-1: a database may know codes a policy cannot name.
    pub fn from_reported(code: &[u8]) -> Option<Country> {
        match code {
            [a, b] if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => {
                Some(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// A code as a policy names it: an assigned ISO 3166-1 alpha-2 code in upper case, or
    /// `XX`, `XK`, `T1`. The error says what was meant when that can be told (`UK` → `GB`).
    pub fn parse(text: &str) -> Result<Country, String> {
        if is_known(text)
            && let Some(country) = Country::from_reported(text.as_bytes())
        {
            return Ok(country);
        }
        let upper = text.to_ascii_uppercase();
        let meant = if is_known(&upper) {
            Some(upper.clone())
        } else if let Some((_, code)) = MISTAKEN.iter().find(|(wrong, _)| *wrong == upper) {
            Some((*code).to_owned())
        } else if upper.len() == 3 {
            (0..ALPHA3.len() / 5)
                .map(|index| &ALPHA3[index * 5..index * 5 + 5])
                .find(|entry| entry[..3] == upper)
                .map(|entry| entry[3..].to_owned())
        } else {
            None
        };
        Err(match meant {
            Some(code) => format!(
                "\"{text}\" is not an ISO 3166-1 alpha-2 country code; did you mean \"{code}\"?"
            ),
            None => format!(
                "\"{text}\" is not an ISO 3166-1 alpha-2 country code (two capital letters, such as DE; XX is unknown)"
            ),
        })
    }

    /// The code, such as `DE`.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII (see the constructors).
        std::str::from_utf8(&self.0).unwrap_or("XX")
    }

    /// Its bit in a [`CountrySet`]: letters and digits are 36 symbols each.
    fn index(self) -> usize {
        let symbol = |byte: u8| match byte {
            b'0'..=b'9' => usize::from(byte - b'0'),
            _ => usize::from(byte - b'A') + 10,
        };
        symbol(self.0[0]) * 36 + symbol(self.0[1])
    }
}

fn is_known(code: &str) -> bool {
    EXTRA.contains(&code)
        || (code.len() == 2
            && code.bytes().all(|byte| byte.is_ascii_uppercase())
            && (0..ASSIGNED.len() / 2).any(|index| &ASSIGNED[index * 2..index * 2 + 2] == code))
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of countries: one bit per possible code.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CountrySet {
    bits: [u64; 21],
}

impl CountrySet {
    /// The set of `countries`.
    pub fn new(countries: impl IntoIterator<Item = Country>) -> CountrySet {
        let mut set = CountrySet::default();
        set.extend(countries);
        set
    }

    /// Adds `countries`.
    pub fn extend(&mut self, countries: impl IntoIterator<Item = Country>) {
        for country in countries {
            let index = country.index();
            self.bits[index / 64] |= 1 << (index % 64);
        }
    }

    /// Adds every country of `other`.
    pub fn union(&mut self, other: &CountrySet) {
        for (own, theirs) in self.bits.iter_mut().zip(other.bits) {
            *own |= theirs;
        }
    }

    /// Whether `country` is in the set.
    pub fn contains(&self, country: Country) -> bool {
        let index = country.index();
        self.bits[index / 64] & (1 << (index % 64)) != 0
    }

    /// Whether the set holds no country.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|word| *word == 0)
    }

    /// How many countries the set holds.
    pub fn len(&self) -> usize {
        self.bits
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }
}

impl fmt::Debug for CountrySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountrySet({} countries)", self.len())
    }
}

/// The countries a `countries` or `not_countries` condition names: named lists (`@eu`)
/// and codes, merged into one set.
#[derive(Debug, Clone)]
pub struct Countries {
    set: CountrySet,
    /// How the condition was written (`@eu, CH`), for operators; interned, so a denial's
    /// reason borrows it.
    label: &'static str,
    /// The label with `not ` before it, for `not_countries` conditions.
    negated: &'static str,
}

impl Countries {
    /// The countries of `set`; `label` is how the condition reads in the policy file.
    pub fn new(set: CountrySet, label: &str) -> Countries {
        Countries {
            set,
            label: crate::decision::interned(label),
            negated: crate::decision::interned(&format!("not {label}")),
        }
    }

    /// Whether `country` is one of them.
    pub fn contains(&self, country: Country) -> bool {
        self.set.contains(country)
    }

    /// The set.
    pub fn set(&self) -> &CountrySet {
        &self.set
    }

    /// How the condition was written.
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// How the condition was written, as a `not_countries` condition reads.
    pub fn negated_label(&self) -> &'static str {
        self.negated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> Country {
        Country::parse(text).unwrap()
    }

    #[test]
    fn every_assigned_code_and_the_extras_parse() {
        assert_eq!(ASSIGNED.len(), 249 * 2);
        for index in 0..249 {
            let text = &ASSIGNED[index * 2..index * 2 + 2];
            assert_eq!(code(text).as_str(), text);
        }
        for text in EXTRA {
            assert_eq!(code(text).as_str(), text);
        }
        assert_eq!(ALPHA3.len(), 249 * 5);
    }

    #[test]
    fn mistakes_name_the_code_meant() {
        for (written, meant) in [
            ("UK", "\"GB\""),
            ("de", "\"DE\""),
            ("DEU", "\"DE\""),
            ("gbr", "\"GB\""),
            ("EL", "\"GR\""),
            ("SU", "\"RU\""),
            ("YU", "\"RS\""),
        ] {
            let err = Country::parse(written).unwrap_err();
            assert!(
                err.contains(&format!("did you mean {meant}")),
                "{written}: {err}"
            );
        }
        for written in ["QQ", "", "D", "DEUT", "D1", "ÄÖ"] {
            let err = Country::parse(written).unwrap_err();
            assert!(!err.contains("did you mean"), "{written}: {err}");
        }
    }

    #[test]
    fn reported_codes_are_upper_cased_and_not_checked() {
        assert_eq!(Country::from_reported(b"de"), Some(code("DE")));
        assert_eq!(
            Country::from_reported(b"AN").map(|c| c.to_string()),
            Some("AN".into())
        );
        assert_eq!(Country::from_reported(b"T1"), Some(code("T1")));
        for bad in [&b""[..], b"D", b"DEU", b"D-", b"\xc3\xa4"] {
            assert_eq!(Country::from_reported(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sets_hold_exactly_their_countries() {
        let mut eu = CountrySet::new([code("DE"), code("FR")]);
        eu.union(&CountrySet::new([code("IT"), code("T1")]));
        assert_eq!(eu.len(), 4);
        for (text, inside) in [("DE", true), ("FR", true), ("IT", true), ("T1", true)] {
            assert_eq!(eu.contains(code(text)), inside, "{text}");
        }
        for text in ["XX", "US", "ZW", "AD"] {
            assert!(!eu.contains(code(text)), "{text}");
        }
        // The first and last bits of the whole range.
        let edges = CountrySet::new([Country(*b"00"), Country(*b"ZZ")]);
        assert!(edges.contains(Country(*b"00")) && edges.contains(Country(*b"ZZ")));
        assert!(!edges.contains(code("XX")));
        assert!(CountrySet::default().is_empty());
    }
}
