//! Bounded cache of forwarded answers, honouring record TTLs and negative caching (RFC 2308).
//!
//! Entries are keyed by (upstream set, lowercase name, type, class): two networks with different
//! upstreams may legitimately get different answers (split horizon), so they never share entries.
//! The cache is an LRU bounded by entry count; an entry lives for the smallest TTL of its answer
//! (positive) or min(SOA TTL, SOA MINIMUM) (negative, RFC 2308 §5), capped by constants below.
//! Served records have their TTLs decreased by the time spent in the cache.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
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
    answer: Answer,
    stored: Instant,
    expires: Instant,
}

/// The LRU, behind a std mutex: every operation is O(1) and nothing awaits while holding it.
pub(crate) struct Cache {
    inner: Option<Mutex<LruCache<CacheKey, Entry>>>,
}

impl Cache {
    /// A cache holding at most `entries` answers; 0 disables caching.
    pub(crate) fn new(entries: usize) -> Self {
        Self {
            inner: NonZeroUsize::new(entries).map(|n| Mutex::new(LruCache::new(n))),
        }
    }

    /// A live entry for `key`, with TTLs aged by its time in the cache.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Answer> {
        let inner = self.inner.as_ref()?;
        let now = Instant::now();
        let mut lru = inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = lru.get(key)?;
        if now >= entry.expires {
            lru.pop(key);
            return None;
        }
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let mut answer = entry.answer.clone();
        drop(lru);
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

    /// Stores `answer` if RFC 2308 / TTLs allow caching it.
    pub(crate) fn put(&self, key: CacheKey, answer: &Answer) {
        let Some(inner) = &self.inner else { return };
        let Some(ttl) = cache_ttl(answer) else { return };
        let now = Instant::now();
        let entry = Entry {
            answer: answer.clone(),
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
    use hickory_proto::rr::Name;
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
}
