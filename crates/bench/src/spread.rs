//! Publishes spread over many topics, and many subscriptions with wildcards: the routing
//! scale case. Topics are `w/A/B/C` (A and B in 0..10, C in 0..topics/100); each
//! subscription is one of
//!
//! - `w/A/B/C` (40 %), `+/A/B/C` (20 %), `w/A/B/C/#` (20 %): one topic each,
//! - `w/A/+/C` (10 %), `w/+/B/C` (10 %): ten topics each,
//!
//! dealt out to the subscribers so that no two filters of one subscriber match the same
//! topic: each message reaches a subscriber at most once whatever the broker's policy for
//! overlapping subscriptions, and the tool knows exactly what each subscriber should get.

/// Topics, the filters of each subscriber and the topics each subscriber's filters cover.
#[derive(Debug, Clone)]
pub struct Spread {
    /// Topic names; publish `seq` of publisher `i` of `p` goes to `topics[(seq·p + i) % len]`.
    pub topics: Vec<String>,
    /// Filters per subscriber.
    pub filters: Vec<Vec<String>>,
    /// Per subscriber, the indexes of the topics its filters match (each once).
    pub covers: Vec<Vec<u32>>,
}

/// A small deterministic generator (splitmix64), so every run and broker gets the same
/// subscriptions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const A: u32 = 10;
const B: u32 = 10;

impl Spread {
    /// `topics` topics (at least 100) and `subscriptions` filters dealt to `subscribers`
    /// subscribers in turn. A filter that would overlap one its subscriber already has is
    /// drawn again (up to 50 times, then left out: see [`Spread::subscriptions`]).
    pub fn wildcard(topics: u32, subscriptions: u64, subscribers: u32) -> Spread {
        let c_max = topics.div_ceil(A * B).max(1);
        let n = A * B * c_max;
        let index = |a: u32, b: u32, c: u32| (a * B + b) * c_max + c;
        let names: Vec<String> = (0..n)
            .map(|t| {
                let (ab, c) = (t / c_max, t % c_max);
                format!("w/{}/{}/{c}", ab / B, ab % B)
            })
            .collect();
        let subs = subscribers.max(1) as usize;
        let mut filters = vec![Vec::new(); subs];
        let mut covers: Vec<Vec<u32>> = vec![Vec::new(); subs];
        let mut taken = vec![vec![false; n as usize]; subs];
        let mut rng = Rng(0x6d69_6467_6521);
        for j in 0..subscriptions {
            let s = (j % subs as u64) as usize;
            let (Some(fs), Some(cs), Some(tk)) =
                (filters.get_mut(s), covers.get_mut(s), taken.get_mut(s))
            else {
                continue;
            };
            for _ in 0..50 {
                let (a, b, c) = (
                    rng.below(u64::from(A)) as u32,
                    rng.below(u64::from(B)) as u32,
                    rng.below(u64::from(c_max)) as u32,
                );
                let (filter, hit): (String, Vec<u32>) = match rng.below(10) {
                    0..=3 => (format!("w/{a}/{b}/{c}"), vec![index(a, b, c)]),
                    4 | 5 => (format!("+/{a}/{b}/{c}"), vec![index(a, b, c)]),
                    6 | 7 => (format!("w/{a}/{b}/{c}/#"), vec![index(a, b, c)]),
                    8 => (
                        format!("w/{a}/+/{c}"),
                        (0..B).map(|b| index(a, b, c)).collect(),
                    ),
                    _ => (
                        format!("w/+/{b}/{c}"),
                        (0..A).map(|a| index(a, b, c)).collect(),
                    ),
                };
                if hit
                    .iter()
                    .any(|&t| tk.get(t as usize).copied().unwrap_or(true))
                {
                    continue;
                }
                for &t in &hit {
                    if let Some(x) = tk.get_mut(t as usize) {
                        *x = true;
                    }
                }
                fs.push(filter);
                cs.extend(hit);
                break;
            }
        }
        Spread {
            topics: names,
            filters,
            covers,
        }
    }

    /// Subscriptions actually made (all subscribers).
    pub fn subscriptions(&self) -> usize {
        self.filters.iter().map(Vec::len).sum()
    }

    /// The topic of publish `seq` of publisher `i` out of `publishers`.
    pub(crate) fn topic_index(&self, i: u32, seq: u64, publishers: u32) -> usize {
        let len = self.topics.len().max(1) as u64;
        ((seq * u64::from(publishers.max(1)) + u64::from(i)) % len) as usize
    }

    /// What each subscriber should receive when publisher `i` sent `sent[i]` messages.
    pub(crate) fn expected(&self, sent: &[u64]) -> Vec<u64> {
        let mut per_topic = vec![0u64; self.topics.len()];
        let p = sent.len() as u32;
        for (i, &n) in sent.iter().enumerate() {
            // seq·p + i cycles through the topics with period len / gcd(p, len): count
            // one period and multiply.
            let len = self.topics.len().max(1) as u64;
            let period = len / gcd(u64::from(p.max(1)), len);
            let (full, rest) = (n / period, n % period);
            for seq in 0..period.min(n) {
                let t = self.topic_index(i as u32, seq, p);
                if let Some(x) = per_topic.get_mut(t) {
                    *x += full + u64::from(seq < rest);
                }
            }
        }
        self.covers
            .iter()
            .map(|c| {
                c.iter()
                    .map(|&t| per_topic.get(t as usize).copied().unwrap_or(0))
                    .sum()
            })
            .collect()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// MQTT topic matching (for the tests: the generator's covers must be what a broker does).
#[cfg(test)]
fn matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(x)) if f == x => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_are_what_the_filters_match_and_never_overlap_within_a_subscriber() {
        let s = Spread::wildcard(1000, 2000, 7);
        assert_eq!(s.topics.len(), 1000);
        assert!(s.subscriptions() > 1900, "{}", s.subscriptions());
        for (fs, cs) in s.filters.iter().zip(&s.covers) {
            let mut want: Vec<u32> = Vec::new();
            for (t, name) in s.topics.iter().enumerate() {
                let hits = fs.iter().filter(|f| matches(f, name)).count();
                assert!(hits <= 1, "{name} matched {hits} filters of one subscriber");
                if hits == 1 {
                    want.push(t as u32);
                }
            }
            let mut got = cs.clone();
            got.sort_unstable();
            assert_eq!(got, want);
        }
        let kinds = |p: &str| s.filters.iter().flatten().filter(|f| f.contains(p)).count();
        assert!(kinds("+") > 0 && kinds("#") > 0);
    }

    #[test]
    fn expected_counts_follow_the_topic_cycle() {
        let s = Spread::wildcard(100, 300, 3);
        let sent = [250u64, 249, 7];
        let exp = s.expected(&sent);
        for (k, cs) in s.covers.iter().enumerate() {
            let mut n = 0;
            for (i, &m) in sent.iter().enumerate() {
                for seq in 0..m {
                    let t = s.topic_index(i as u32, seq, 3) as u32;
                    n += u64::from(cs.contains(&t));
                }
            }
            assert_eq!(exp[k], n);
        }
    }

    #[test]
    fn topic_matching() {
        assert!(matches("w/+/1/2", "w/0/1/2"));
        assert!(matches("w/0/1/2/#", "w/0/1/2"));
        assert!(matches("+/0/1/2", "w/0/1/2"));
        assert!(!matches("w/0/+", "w/0/1/2"));
        assert!(!matches("w/0/1/2/3", "w/0/1/2"));
    }
}
