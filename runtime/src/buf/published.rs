//! `Published`: which buffer sits in which entry of a provided-buffer ring, for the entries
//! given to the kernel and not yet claimed by a completion.
//!
//! # Why positions
//!
//! The kernel takes entries strictly in ring order: it reads the entry at its head and advances
//! the head by the number of entries the transfer used (`io_ring_buffers_peek` and
//! `io_kbuf_commit` in the kernel's `io_uring/kbuf.c`). A bundle completion names only its first
//! buffer id and its byte count; its other buffers are the entries that followed the first one
//! in the ring. But completions of different sockets are *taken* in any order: each stream takes
//! its completion's buffers when its task polls. So the entries claimed so far are not a
//! prefix of the ring, and "the next buffer" of a bundle must be looked up by ring position,
//! never as "the front of what is left".
//!
//! # Invariants
//!
//! - Every entry ever published gets the next `position` (a `u64` that never wraps); `entries`
//!   holds the unclaimed ones, sorted by position, so the run of a bundle is a contiguous range
//!   of `entries` whose positions are consecutive.
//! - `position[bid]` is `Some(p)` exactly when `(p, bid)` is in `entries`: an id is published at
//!   most once at a time, and a claim removes it from both.
//! - A claim is all or nothing: a malformed one changes nothing, so it cannot lose or
//!   double-return the buffers of other completions.
//! - The kernel may still read only unclaimed entries, so fewer than `entries` unclaimed ones
//!   means the slot the next publish writes is one the kernel is done with.

use std::{collections::VecDeque, fmt};

/// Why a completion's buffers could not be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// The id is not in the kernel's ring (never published, or already claimed).
    NotPublished(u16),
    /// Fewer than `wanted` consecutive unclaimed entries start at `first`'s entry.
    RunTooShort {
        first: u16,
        wanted: usize,
        available: usize,
    },
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ClaimError::NotPublished(bid) => {
                write!(f, "buffer id {bid} is not in the kernel's ring")
            }
            ClaimError::RunTooShort {
                first,
                wanted,
                available,
            } => write!(
                f,
                "a bundle of {wanted} buffers from id {first}, but only {available} consecutive \
                 ring entries from there are the kernel's"
            ),
        }
    }
}

/// The unclaimed ring entries (see the module docs).
#[derive(Debug)]
pub(crate) struct Published {
    /// `(position, bid)` of every unclaimed entry, in ring order.
    entries: VecDeque<(u64, u16)>,
    /// The position of each buffer id while it is published.
    position: Vec<Option<u64>>,
    /// The position the next published entry gets.
    next: u64,
}

impl Published {
    /// Tracking for a ring whose buffer ids are `0..ids`.
    pub(crate) fn new(ids: u16) -> Published {
        Published {
            entries: VecDeque::with_capacity(ids as usize),
            position: vec![None; ids as usize],
            next: 0,
        }
    }

    /// Number of unclaimed entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The unclaimed ids, in ring order (tests check where every id is).
    #[cfg(test)]
    pub(crate) fn ids(&self) -> Vec<u16> {
        self.entries.iter().map(|&(_, bid)| bid).collect()
    }

    /// Whether `bid` is in the kernel's ring.
    pub(crate) fn contains(&self, bid: u16) -> bool {
        self.position.get(bid as usize).is_some_and(Option::is_some)
    }

    /// Records that `bid` was written to the next ring entry.
    ///
    /// # Panics
    ///
    /// Panics if `bid` is out of range or already published (a bug in the caller, which
    /// publishes only free buffers).
    pub(crate) fn publish(&mut self, bid: u16) {
        let slot = &mut self.position[bid as usize];
        assert!(slot.is_none(), "buffer id {bid} published twice");
        *slot = Some(self.next);
        self.entries.push_back((self.next, bid));
        self.next += 1;
    }

    /// Claims the `count` entries a completion used, starting with the one holding `first`,
    /// and calls `each` with their ids in ring order. Nothing changes on error.
    pub(crate) fn claim_run(
        &mut self,
        first: u16,
        count: usize,
        mut each: impl FnMut(u16),
    ) -> Result<(), ClaimError> {
        // The common case, one buffer (a single claim, or a bundle that used one) and the
        // kernel took the oldest published entry: no search, no drain.
        if count == 1
            && self
                .entries
                .front()
                .is_some_and(|&(_, front)| front == first)
        {
            self.entries.pop_front();
            self.position[first as usize] = None;
            each(first);
            return Ok(());
        }
        let start = self
            .position
            .get(first as usize)
            .copied()
            .flatten()
            .ok_or(ClaimError::NotPublished(first))?;
        // The common case, completions taken in selection order: `first` is the front.
        let at = match self.entries.front() {
            Some(&(p, _)) if p == start => 0,
            _ => self
                .entries
                .binary_search_by_key(&start, |&(p, _)| p)
                .expect("`position` and `entries` agree"),
        };
        // Positions are distinct and sorted, so the run is consecutive iff the last one is
        // `count - 1` past the first.
        let end = at + count;
        let consecutive = count > 0
            && end <= self.entries.len()
            && self.entries[end - 1].0 == start + count as u64 - 1;
        if !consecutive {
            let available = self
                .entries
                .range(at..)
                .zip(start..)
                .take_while(|&(&(p, _), expected)| p == expected)
                .count();
            return Err(ClaimError::RunTooShort {
                first,
                wanted: count,
                available,
            });
        }
        for (_, bid) in self.entries.drain(at..end) {
            self.position[bid as usize] = None;
            each(bid);
        }
        Ok(())
    }

    /// Claims the one entry holding `bid`.
    pub(crate) fn claim(&mut self, bid: u16) -> Result<(), ClaimError> {
        self.claim_run(bid, 1, |_| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(ids: u16) -> Published {
        let mut p = Published::new(ids);
        for bid in 0..ids {
            p.publish(bid);
        }
        p
    }

    fn claim(p: &mut Published, first: u16, count: usize) -> Result<Vec<u16>, ClaimError> {
        let mut ids = Vec::new();
        p.claim_run(first, count, |bid| ids.push(bid))?;
        Ok(ids)
    }

    /// The kernel selected [0,1,2] for socket A, [3,4] for B, [5] for C and [6,7] for D; their
    /// completions are taken D, B, C, A. Each gets exactly its own run.
    #[test]
    fn bundles_taken_out_of_selection_order_get_their_own_runs() {
        let mut p = published(8);
        assert_eq!(claim(&mut p, 6, 2), Ok(vec![6, 7]));
        assert_eq!(claim(&mut p, 3, 2), Ok(vec![3, 4]));
        assert_eq!(claim(&mut p, 5, 1), Ok(vec![5]));
        assert_eq!(claim(&mut p, 0, 3), Ok(vec![0, 1, 2]));
        assert!(p.is_empty());
        assert!((0..8).all(|bid| !p.contains(bid)));
    }

    /// Buffers come back in another order than they went out and are published again after
    /// the rest of the ring; a bundle over the new entries follows ring order, not id order,
    /// and never joins entries that are not neighbours in the ring.
    #[test]
    fn republished_ids_follow_ring_order() {
        let mut p = published(6);
        // The kernel took [0,1], [2,3] and [4,5]; the last two completions are taken first.
        assert_eq!(claim(&mut p, 2, 2), Ok(vec![2, 3]));
        assert_eq!(claim(&mut p, 4, 2), Ok(vec![4, 5]));
        // Returned 5, 3, 4, 2 and published in that order, after the entries of 0 and 1.
        for bid in [5, 3, 4, 2] {
            p.publish(bid);
        }
        assert_eq!(p.len(), 6);
        // 1 and 5 are not neighbours in the ring (the entries of 2..=5 lay between them).
        assert!(claim(&mut p, 1, 2).is_err());
        // The kernel took [5,3] for one socket and [4,2] for another.
        assert_eq!(claim(&mut p, 4, 2), Ok(vec![4, 2]));
        assert_eq!(claim(&mut p, 0, 2), Ok(vec![0, 1]));
        assert_eq!(claim(&mut p, 5, 2), Ok(vec![5, 3]));
        assert!(p.is_empty());
    }

    /// Malformed claims change nothing: the ids they name stay claimable by the completions
    /// that really own them, and nothing is handed out twice.
    #[test]
    fn malformed_claims_lose_nothing() {
        let mut p = published(8);
        assert_eq!(claim(&mut p, 2, 2), Ok(vec![2, 3]));

        // A start id that is not in the ring: already claimed, or out of range.
        assert_eq!(claim(&mut p, 3, 1), Err(ClaimError::NotPublished(3)));
        assert_eq!(claim(&mut p, 200, 1), Err(ClaimError::NotPublished(200)));
        // A run across an entry another completion claimed.
        assert_eq!(
            claim(&mut p, 1, 2),
            Err(ClaimError::RunTooShort {
                first: 1,
                wanted: 2,
                available: 1
            })
        );
        // More bytes than the published run from 4 holds (4..=7 is four entries).
        assert_eq!(
            claim(&mut p, 4, 5),
            Err(ClaimError::RunTooShort {
                first: 4,
                wanted: 5,
                available: 4
            })
        );
        // A claim of no entries is malformed, too.
        assert!(claim(&mut p, 4, 0).is_err());
        assert_eq!(p.len(), 6);

        // The real owners still get theirs.
        assert_eq!(claim(&mut p, 0, 2), Ok(vec![0, 1]));
        assert_eq!(claim(&mut p, 4, 4), Ok(vec![4, 5, 6, 7]));
        assert!(p.is_empty());
    }

    /// Single-buffer claims in any order, mixed with bundles on the same ring.
    #[test]
    fn single_claims_mix_with_bundles() {
        let mut p = published(5);
        assert_eq!(p.claim(3), Ok(()));
        assert_eq!(p.claim(3), Err(ClaimError::NotPublished(3)));
        assert_eq!(claim(&mut p, 0, 3), Ok(vec![0, 1, 2]));
        // The front entry (the kernel's usual pick) is claimed without a search; both the
        // entry and the id's position go.
        assert_eq!(p.claim(4), Ok(()));
        assert!(p.is_empty());
        assert_eq!(p.claim(4), Err(ClaimError::NotPublished(4)));
        p.publish(4);
        p.publish(0);
        assert!(p.contains(4) && p.contains(0));
        assert_eq!(p.claim(4), Ok(()));
        assert!(!p.contains(4));
        assert_eq!(claim(&mut p, 0, 1), Ok(vec![0]));
        assert!(p.is_empty());
    }

    #[test]
    #[should_panic(expected = "published twice")]
    fn publishing_an_id_twice_is_a_bug() {
        let mut p = published(2);
        p.publish(1);
    }
}
