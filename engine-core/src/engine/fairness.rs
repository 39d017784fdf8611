//! Weighted fair queueing of the waiting sequences (start-time fair queueing). Each request may
//! belong to a flow (a tenant) with a weight; a new sequence's start tag is the later of the
//! queue's virtual time and its flow's previous finish tag, and its flow's finish tag moves on by
//! its cost (prompt plus completion tokens) over the weight. Sequences are admitted in order of
//! start tag, so a flow that floods the queue only delays itself: another flow's next request
//! starts at the current virtual time, ahead of the flood's backlog. With one flow (or none)
//! this is arrival order.

use std::collections::HashMap;

/// The flow a request belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Its identity (e.g. a tenant's id).
    pub id: String,
    /// Its share relative to other flows (at least 1).
    pub weight: u32,
}

/// The queue's virtual clock and each flow's finish tag.
#[derive(Debug, Default)]
pub(crate) struct FairQueue {
    virtual_time: f64,
    finish: HashMap<String, f64>,
}

impl FairQueue {
    /// The start tag of a new sequence of `flow` costing `cost` tokens.
    pub fn tag(&mut self, flow: Option<&Flow>, cost: usize) -> f64 {
        let (id, weight) = flow.map_or(("", 1), |f| (f.id.as_str(), f.weight.max(1)));
        let start = self
            .finish
            .get(id)
            .copied()
            .unwrap_or(0.0)
            .max(self.virtual_time);
        self.finish.insert(
            id.to_owned(),
            start + cost.max(1) as f64 / f64::from(weight),
        );
        start
    }

    /// A sequence with start tag `start` was admitted: the virtual clock reaches it. Flows whose
    /// finish tag it has passed are forgotten (they would start at the clock anyway).
    pub fn admitted(&mut self, start: f64) {
        if start > self.virtual_time {
            self.virtual_time = start;
            if self.finish.len() > 64 {
                let now = self.virtual_time;
                self.finish.retain(|_, f| *f > now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(id: &str, weight: u32) -> Flow {
        Flow {
            id: id.into(),
            weight,
        }
    }

    #[test]
    fn one_flow_is_arrival_order() {
        let mut q = FairQueue::default();
        let tags: Vec<f64> = (0..5).map(|_| q.tag(None, 10)).collect();
        assert!(tags.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_new_flow_starts_ahead_of_a_flood_and_weights_share() {
        let mut q = FairQueue::default();
        let a = flow("a", 1);
        let flood: Vec<f64> = (0..100).map(|_| q.tag(Some(&a), 10)).collect();
        q.admitted(flood[0]);
        let b = q.tag(Some(&flow("b", 1)), 10);
        // b's first request waits behind at most one of a's.
        assert!(flood.iter().filter(|&&t| t < b).count() <= 1);
        // A flow of weight 4 advances four times slower per token.
        let mut q = FairQueue::default();
        let heavy = flow("h", 4);
        let light = flow("l", 1);
        let h: Vec<f64> = (0..8).map(|_| q.tag(Some(&heavy), 10)).collect();
        let l: Vec<f64> = (0..2).map(|_| q.tag(Some(&light), 10)).collect();
        assert_eq!(h[4], l[1]);
    }
}
