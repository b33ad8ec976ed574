//! `Histogram`: a fixed-size distribution of cycle counts, for percentiles of lock waits and
//! fault latencies.
//!
//! HDR-like buckets: values 0..8 each have their own bucket; above that, every power of two
//! is split into 8 equal sub-buckets, so a bucket's width is at most 1/8 of its lower bound
//! and a percentile read from it is at most 12.5% above the true value. 496 buckets cover
//! all of `u64`. The bucket array is allocated on the first `record` and never again:
//! recording allocates nothing, and an empty histogram (an uncontended lock) costs one word.

/// Values below this have a bucket each.
const EXACT: u64 = 8;
/// Sub-buckets per power of two: 2^SUB_BITS.
const SUB_BITS: u32 = 3;
/// Buckets for all of u64: the exact ones, then 8 per power of two from 2^3 to 2^63.
pub const BUCKETS: usize = EXACT as usize + (64 - SUB_BITS as usize) * (1 << SUB_BITS);

/// A distribution of `u64` values (cycles) in [`BUCKETS`] fixed buckets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// invariant: `None` exactly when `count == 0`; the counts sum to `count`.
    counts: Option<Box<[u64; BUCKETS]>>,
    count: u64,
    /// invariant: the largest value recorded (0 when empty).
    max: u64,
}

impl Histogram {
    /// Adds one value.
    pub fn record(&mut self, value: u64) {
        let counts = self.counts.get_or_insert_with(|| Box::new([0; BUCKETS]));
        counts[bucket_of(value)] += 1;
        self.count += 1;
        self.max = self.max.max(value);
    }

    /// Adds every value of `other` (the distribution of both together).
    pub fn merge(&mut self, other: &Histogram) {
        let Some(theirs) = &other.counts else { return };
        let ours = self.counts.get_or_insert_with(|| Box::new([0; BUCKETS]));
        for (mine, their) in ours.iter_mut().zip(theirs.iter()) {
            *mine += their;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value recorded, exactly (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The nearest-rank `quantile` (0.0..=1.0): the upper bound of the bucket holding the
    /// ceil(quantile * count)-th smallest value, but never more than the largest value
    /// recorded. 0 when empty.
    pub fn quantile(&self, quantile: f64) -> u64 {
        assert!((0.0..=1.0).contains(&quantile), "a quantile is in 0..=1, got {quantile}");
        let Some(counts) = &self.counts else { return 0 };
        let rank = ((quantile * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, &in_bucket) in counts.iter().enumerate() {
            seen += in_bucket;
            if seen >= rank {
                return bucket_upper(bucket).min(self.max);
            }
        }
        unreachable!("the bucket counts sum to count, and rank <= count")
    }
}

/// The bucket `value` falls in.
fn bucket_of(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let magnitude = 63 - value.leading_zeros(); // >= SUB_BITS
    let sub = (value >> (magnitude - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    EXACT as usize + ((magnitude - SUB_BITS) as usize) * (1 << SUB_BITS) + sub as usize
}

/// The largest value bucket `bucket` holds.
fn bucket_upper(bucket: usize) -> u64 {
    if bucket < EXACT as usize {
        return bucket as u64;
    }
    let above = bucket - EXACT as usize;
    let shift = (above >> SUB_BITS) as u32;
    let sub = (above & ((1 << SUB_BITS) - 1)) as u64;
    let lower = ((1 << SUB_BITS) + sub) << shift;
    lower + ((1u64 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_u64_in_order() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(7), 7);
        assert_eq!(bucket_of(8), 8);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_upper(BUCKETS - 1), u64::MAX);
        for bucket in 1..BUCKETS {
            let lower = bucket_upper(bucket - 1) + 1;
            assert_eq!(bucket_of(lower), bucket, "bucket {bucket} starts right after the one before");
            assert_eq!(bucket_of(bucket_upper(bucket)), bucket);
        }
    }

    #[test]
    fn a_bucket_is_at_most_an_eighth_of_its_values_wide() {
        for bucket in EXACT as usize..BUCKETS {
            let lower = bucket_upper(bucket - 1) + 1;
            let width = bucket_upper(bucket) - lower + 1;
            assert!(width <= lower / 8, "bucket {bucket}: width {width}, lower bound {lower}");
        }
    }

    #[test]
    fn quantiles_are_nearest_rank_within_the_bucket_error() {
        let mut histogram = Histogram::default();
        assert_eq!(histogram.quantile(0.99), 0);
        for value in 1..=1000u64 {
            histogram.record(value * 100);
        }
        assert_eq!(histogram.count(), 1000);
        assert_eq!(histogram.max(), 100_000);
        // The exact nearest-rank p50 is 50_000 and p99 is 99_000: reported at most 12.5% above.
        let p50 = histogram.quantile(0.5);
        assert!((50_000..=56_250).contains(&p50), "p50 {p50}");
        let p99 = histogram.quantile(0.99);
        assert!((99_000..=100_000).contains(&p99), "p99 {p99} (clamped to the max)");
        assert_eq!(histogram.quantile(1.0), 100_000);
        let p0 = histogram.quantile(0.0);
        assert!((100..=112).contains(&p0), "rank 1 is the smallest value's bucket: {p0}");
    }

    #[test]
    fn small_values_are_exact_and_merge_adds_distributions() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for value in [1, 2, 3] {
            a.record(value);
        }
        b.record(7);
        a.merge(&b);
        a.merge(&Histogram::default());
        assert_eq!(a.count(), 4);
        assert_eq!(a.quantile(0.5), 2);
        assert_eq!(a.quantile(1.0), 7);
        assert_eq!(a.max(), 7);
    }
}
