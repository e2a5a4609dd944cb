//! Bounded cache of forwarded answers, honouring record TTLs and negative caching (RFC 2308).
//!
//! Entries are keyed by (upstream set, lowercase name, type, class): two networks with different
//! upstreams may legitimately get different answers (split horizon), so they never share entries.
//! The cache is an LRU bounded by entry count; an entry lives for the smallest TTL of its answer
//! (positive) or min(SOA TTL, SOA MINIMUM) (negative, RFC 2308 §5), capped by constants below.
//! Served records have their TTLs decreased by the time spent in the cache.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use lru::LruCache;

/// Longest time a positive answer is kept, whatever its TTL says.
pub(crate) const MAX_POSITIVE_TTL: u32 = 86_400;
/// Longest time a negative answer is kept (RFC 2308 §5 suggests 1-3 hours; names come and go).
pub(crate) const MAX_NEGATIVE_TTL: u32 = 600;

/// Cache key: identity of the upstream set plus the question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    /// Hash of the ordered upstream list the answer came from.
    pub(crate) upstreams: u64,
    /// Lowercase question name.
    pub(crate) name: String,
    /// Question type.
    pub(crate) qtype: RecordType,
    /// Question class.
    pub(crate) qclass: DNSClass,
}

/// A forwarded answer, as stored and as served.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// Upstream's response code (NOERROR or NXDOMAIN when it comes from the cache).
    pub(crate) rcode: ResponseCode,
    /// Answer section.
    pub(crate) answers: Vec<Record>,
    /// Authority section (the SOA of negative answers).
    pub(crate) authorities: Vec<Record>,
    /// Additional section, without OPT.
    pub(crate) additionals: Vec<Record>,
    /// Whether upstream set AD (kept so validating stubs behind us see it).
    pub(crate) authentic_data: bool,
}

struct Entry {
    answer: Stored,
    stored: Instant,
    expires: Instant,
}

/// How an entry holds its answer: encoded when hickory can encode it (the UDP fast path serves
/// the bytes; the rare slow-path hit decodes them), decoded otherwise. Holding both cost ~1 KiB
/// per cached name: a decoded record is a few hundred bytes, its wire form tens.
enum Stored {
    /// Pre-encoded answer.
    Wire(Arc<Wire>),
    /// An answer hickory could not encode back.
    Decoded(Answer),
}

/// A cached answer as wire bytes, so a cache hit costs a copy and a few patches instead of
/// decoding and encoding records: header (placeholder) + question + answer, authority and
/// additional sections, encoded by hickory (so names may point into the question, which is
/// why a client's question is only spliced in when it equals this one but for case).
#[derive(Debug)]
pub(crate) struct Wire {
    /// The encoded message; its header is rewritten per client.
    pub(crate) bytes: Vec<u8>,
    /// Length of the question section, which starts at offset 12.
    pub(crate) question_len: usize,
    /// Offsets of every record's TTL, to age them.
    pub(crate) ttl_offsets: Vec<usize>,
    /// Record counts of the answer, authority and additional sections.
    pub(crate) counts: [u16; 3],
    /// Response code.
    pub(crate) rcode: ResponseCode,
    /// AD flag from upstream.
    pub(crate) authentic_data: bool,
}

impl Wire {
    /// Encodes `answer` to the question `key` asked; None when hickory cannot encode it.
    fn encode(key: &CacheKey, answer: &Answer) -> Option<Wire> {
        let mut msg = Message::response(0, OpCode::Query);
        let mut name = Name::from_ascii(&key.name).ok()?;
        name.set_fqdn(true);
        let mut q = Query::query(name, key.qtype);
        q.set_query_class(key.qclass);
        msg.add_query(q);
        msg.answers = answer.answers.clone();
        msg.authorities = answer.authorities.clone();
        msg.additionals = answer.additionals.clone();
        let mut bytes = msg.to_vec().ok()?;
        // hickory's encoder starts at 512 bytes; a typical answer is tens: a cache of 1,000
        // names held 0.5 MiB of spare capacity.
        bytes.shrink_to_fit();
        let question_len = skip_name(&bytes, 12)? + 4 - 12;
        let total = answer.answers.len() + answer.authorities.len() + answer.additionals.len();
        let mut ttl_offsets = Vec::with_capacity(total);
        let mut at = 12 + question_len;
        for _ in 0..total {
            let ttl = skip_name(&bytes, at)? + 4;
            let rdlen = usize::from(u16::from_be_bytes([
                *bytes.get(ttl + 4)?,
                *bytes.get(ttl + 5)?,
            ]));
            ttl_offsets.push(ttl);
            at = ttl + 6 + rdlen;
        }
        if at != bytes.len() {
            return None;
        }
        let count = |n: usize| u16::try_from(n).ok();
        Some(Wire {
            bytes,
            question_len,
            ttl_offsets,
            counts: [
                count(answer.answers.len())?,
                count(answer.authorities.len())?,
                count(answer.additionals.len())?,
            ],
            rcode: answer.rcode,
            authentic_data: answer.authentic_data,
        })
    }
}

impl Wire {
    /// The answer these bytes encode, TTLs as stored.
    fn decode(&self) -> Option<Answer> {
        let mut msg = Message::from_vec(&self.bytes).ok()?;
        Some(Answer {
            rcode: self.rcode,
            answers: std::mem::take(&mut msg.answers),
            authorities: std::mem::take(&mut msg.authorities),
            additionals: std::mem::take(&mut msg.additionals),
            authentic_data: self.authentic_data,
        })
    }
}

/// Offset just past the encoded name starting at `at` (labels, ending in root or a pointer).
fn skip_name(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *bytes.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l if l & 0xC0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
}

/// The LRU, behind a std mutex: every operation is O(1) and nothing awaits while holding it.
pub(crate) struct Cache {
    inner: Option<Mutex<LruCache<CacheKey, Entry>>>,
}

impl Cache {
    /// A cache holding at most `entries` answers; 0 disables caching.
    pub(crate) fn new(entries: usize) -> Self {
        Self {
            // `LruCache::new` reserves its whole table up front (~270 KiB of heap for the
            // default 10,000 entries); grown on demand, a lightly used cache costs what it holds.
            inner: NonZeroUsize::new(entries).map(|n| {
                let mut lru = LruCache::unbounded();
                lru.resize(n);
                Mutex::new(lru)
            }),
        }
    }

    /// Runs `read` on the live entry for `key` with the seconds it has spent cached; an
    /// expired entry is dropped instead.
    fn live<T>(&self, key: &CacheKey, read: impl FnOnce(&Entry, u32) -> T) -> Option<T> {
        let inner = self.inner.as_ref()?;
        let now = Instant::now();
        let mut lru = inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = lru.get(key)?;
        if now >= entry.expires {
            lru.pop(key);
            return None;
        }
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        Some(read(entry, age))
    }

    /// A live entry for `key`, with TTLs aged by its time in the cache.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Answer> {
        let (stored, age) = self.live(key, |e, age| {
            let s = match &e.answer {
                Stored::Wire(w) => Stored::Wire(w.clone()),
                Stored::Decoded(a) => Stored::Decoded(a.clone()),
            };
            (s, age)
        })?;
        let mut answer = match stored {
            Stored::Decoded(a) => a,
            // Decoded outside the lock; bytes hickory wrote itself decode unless it is broken.
            Stored::Wire(w) => w.decode()?,
        };
        for r in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
            .chain(answer.additionals.iter_mut())
        {
            r.decrement_ttl(age);
        }
        Some(answer)
    }

    /// The pre-encoded form of a live entry for `key`, with the seconds it has spent cached.
    pub(crate) fn get_wire(&self, key: &CacheKey) -> Option<(Arc<Wire>, u32)> {
        self.live(key, |e, age| match &e.answer {
            Stored::Wire(w) => Some((w.clone(), age)),
            Stored::Decoded(_) => None,
        })?
    }

    /// Stores `answer` if RFC 2308 / TTLs allow caching it.
    pub(crate) fn put(&self, key: CacheKey, answer: &Answer) {
        let Some(inner) = &self.inner else { return };
        let Some(ttl) = cache_ttl(answer) else { return };
        let now = Instant::now();
        let entry = Entry {
            answer: match Wire::encode(&key, answer) {
                Some(w) => Stored::Wire(Arc::new(w)),
                None => Stored::Decoded(answer.clone()),
            },
            stored: now,
            expires: now + Duration::from_secs(u64::from(ttl)),
        };
        inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(key, entry);
    }

    /// Number of entries currently held (expired ones included until touched).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |m| m.lock().unwrap_or_else(|p| p.into_inner()).len())
    }
}

/// How long an answer may be cached, or None when it must not be.
pub(crate) fn cache_ttl(answer: &Answer) -> Option<u32> {
    match answer.rcode {
        ResponseCode::NoError if !answer.answers.is_empty() => {
            let ttl = answer.answers.iter().map(|r| r.ttl).min()?;
            (ttl > 0).then_some(ttl.min(MAX_POSITIVE_TTL))
        }
        // NXDOMAIN and NODATA: cacheable only with an SOA in the authority section (RFC 2308 §5).
        ResponseCode::NoError | ResponseCode::NXDomain => {
            let ttl = answer
                .authorities
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })
                .min()?;
            (ttl > 0).then_some(ttl.min(MAX_NEGATIVE_TTL))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use std::net::Ipv4Addr;

    fn key(name: &str) -> CacheKey {
        CacheKey {
            upstreams: 1,
            name: name.into(),
            qtype: RecordType::A,
            qclass: DNSClass::IN,
        }
    }

    fn a(ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii("x.test.").unwrap(),
            ttl,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        )
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let n = Name::from_ascii("test.").unwrap();
        Record::from_rdata(
            n.clone(),
            ttl,
            RData::SOA(SOA::new(n.clone(), n, 1, 1, 1, 1, minimum)),
        )
    }

    fn answer(rcode: ResponseCode, answers: Vec<Record>, auth: Vec<Record>) -> Answer {
        Answer {
            rcode,
            answers,
            authorities: auth,
            additionals: vec![],
            authentic_data: false,
        }
    }

    #[test]
    fn ttl_rules() {
        assert_eq!(
            cache_ttl(&answer(ResponseCode::NoError, vec![a(30), a(10)], vec![])),
            Some(10)
        );
        assert_eq!(
            cache_ttl(&answer(ResponseCode::NoError, vec![a(0)], vec![])),
            None
        );
        assert_eq!(
            cache_ttl(&answer(ResponseCode::NoError, vec![a(1_000_000)], vec![])),
            Some(MAX_POSITIVE_TTL)
        );
        // Negative: min(SOA TTL, MINIMUM), only with an SOA.
        assert_eq!(
            cache_ttl(&answer(ResponseCode::NXDomain, vec![], vec![soa(300, 60)])),
            Some(60)
        );
        assert_eq!(
            cache_ttl(&answer(ResponseCode::NoError, vec![], vec![soa(30, 60)])),
            Some(30)
        );
        assert_eq!(
            cache_ttl(&answer(ResponseCode::NXDomain, vec![], vec![])),
            None
        );
        assert_eq!(
            cache_ttl(&answer(ResponseCode::ServFail, vec![a(30)], vec![])),
            None
        );
    }

    #[test]
    fn bounded_and_serves_copies() {
        let c = Cache::new(2);
        for n in ["a", "b", "c"] {
            c.put(key(n), &answer(ResponseCode::NoError, vec![a(30)], vec![]));
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&key("a")).is_none());
        assert_eq!(c.get(&key("c")).unwrap().answers[0].ttl, 30);
        let off = Cache::new(0);
        off.put(
            key("a"),
            &answer(ResponseCode::NoError, vec![a(30)], vec![]),
        );
        assert!(off.get(&key("a")).is_none());
    }

    #[test]
    fn slow_path_hits_decode_what_was_stored() {
        let c = Cache::new(8);
        let positive = answer(ResponseCode::NoError, vec![a(30), a(20)], vec![]);
        c.put(key("p"), &positive);
        let mut negative = answer(ResponseCode::NXDomain, vec![], vec![soa(300, 60)]);
        negative.authentic_data = true;
        c.put(key("n"), &negative);
        for (k, want) in [("p", &positive), ("n", &negative)] {
            assert!(c.get_wire(&key(k)).is_some(), "{k} is held encoded");
            let got = c.get(&key(k)).unwrap();
            assert_eq!(got.rcode, want.rcode, "{k}");
            assert_eq!(got.answers, want.answers, "{k}");
            assert_eq!(got.authorities, want.authorities, "{k}");
            assert_eq!(got.additionals, want.additionals, "{k}");
            assert_eq!(got.authentic_data, want.authentic_data, "{k}");
        }
    }
}
