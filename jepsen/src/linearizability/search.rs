//! The Wing–Gong–Lowe search of one key's entries: calls and returns in a
//! time-ordered doubly linked list, linearizing a call that precedes the
//! first remaining return and backtracking at a return whose op is not yet
//! linearized, with Lowe's memo of every (linearized set, state) reached,
//! within the [`Budget`]. On failure it keeps the deepest dead end as the
//! raw material of the witness.

use std::collections::HashSet;
use std::time::Instant;

use super::model::{step, Entry, State};
use super::Budget;

/// A set of op ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Self {
        Bitset(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// A call or return event in the doubly linked list.
#[derive(Clone, Copy, Debug)]
struct Node {
    prev: usize,
    next: usize,
    /// The op (index into the entries).
    op: usize,
    is_call: bool,
    /// For a call: its return node, or `NIL` for an indeterminate op.
    partner: usize,
}

#[derive(Default)]
pub(super) struct RawWitness {
    pub(super) prefix: Vec<usize>,
    pub(super) state: State,
    pub(super) blocking: Option<usize>,
    pub(super) stuck: Vec<usize>,
}

pub(super) enum SearchResult {
    Linearizable,
    NotLinearizable,
    Exhausted(String),
}

pub(super) struct Search<'e, 'a> {
    entries: &'e [Entry<'a>],
    nodes: Vec<Node>,
    pub(super) steps: u64,
    pub(super) best: Option<RawWitness>,
}

impl<'e, 'a> Search<'e, 'a> {
    pub(super) fn new(entries: &'e [Entry<'a>]) -> Self {
        // Events ordered by time; at equal times calls come first, so ops
        // touching at one instant count as concurrent.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(entries.len() * 2);
        for (i, e) in entries.iter().enumerate() {
            events.push((e.call_ns, false, i));
            if let Some(r) = e.return_ns {
                debug_assert!(r >= e.call_ns);
                events.push((r, true, i));
            }
        }
        events.sort_unstable();
        let mut nodes = Vec::with_capacity(events.len() + 1);
        nodes.push(Node {
            prev: NIL,
            next: NIL,
            op: NIL,
            is_call: false,
            partner: NIL,
        });
        let mut call_node = vec![NIL; entries.len()];
        for (pos, &(_, is_return, op)) in events.iter().enumerate() {
            let id = pos + 1;
            nodes[id - 1].next = id;
            nodes.push(Node {
                prev: id - 1,
                next: NIL,
                op,
                is_call: !is_return,
                partner: NIL,
            });
            if is_return {
                let c = call_node[op];
                debug_assert_ne!(c, NIL, "a return follows its call");
                nodes[c].partner = id;
            } else {
                call_node[op] = id;
            }
        }
        Search {
            entries,
            nodes,
            steps: 0,
            best: None,
        }
    }

    fn unlink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = x;
        if next != NIL {
            self.nodes[next].prev = x;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let partner = self.nodes[call].partner;
        if partner != NIL {
            self.unlink(partner);
        }
    }

    /// Undoes [`Search::lift`]: relinks in the reverse order of unlinking.
    fn unlift(&mut self, call: usize) {
        let partner = self.nodes[call].partner;
        if partner != NIL {
            self.relink(partner);
        }
        self.relink(call);
    }

    /// Remembers the configuration at a dead end if it is the deepest so far.
    fn note_dead_end(&mut self, stack: &[(usize, State)], state: State, at: usize) {
        if self.best.as_ref().is_some_and(|b| b.prefix.len() >= stack.len()) {
            return;
        }
        let mut stuck = Vec::new();
        let mut n = self.nodes[HEAD].next;
        while n != at && n != NIL {
            if self.nodes[n].is_call {
                stuck.push(self.nodes[n].op);
            }
            n = self.nodes[n].next;
        }
        let blocking = (at != NIL).then(|| self.nodes[at].op);
        let prefix = stack.iter().map(|&(node, _)| self.nodes[node].op).collect();
        self.best = Some(RawWitness {
            prefix,
            state,
            blocking,
            stuck,
        });
    }

    pub(super) fn run(&mut self, budget: &Budget, deadline: Option<Instant>) -> SearchResult {
        let n = self.entries.len();
        let finite_total = self.entries.iter().filter(|e| e.return_ns.is_some()).count();
        if finite_total == 0 {
            return SearchResult::Linearizable;
        }
        let entry_bytes = (n.div_ceil(64) * 8 + std::mem::size_of::<(Bitset, State)>() + 16) as u64;
        let max_cache_entries = (budget.max_cache_bytes / entry_bytes.max(1)).max(1);

        let mut cache: HashSet<(Bitset, State)> = HashSet::new();
        let mut linearized = Bitset::new(n);
        let mut state: State = None;
        let mut finite_done = 0usize;
        // (call node, state before it) of each linearized op, in order.
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut entry = self.nodes[HEAD].next;

        loop {
            self.steps += 1;
            if self.steps > budget.max_steps_per_key {
                return SearchResult::Exhausted(format!("step budget of {} spent", budget.max_steps_per_key));
            }
            if self.steps % 1024 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                return SearchResult::Exhausted("time budget spent".to_string());
            }

            if entry != NIL && self.nodes[entry].is_call {
                // A candidate: its call precedes the first remaining return.
                let op = self.nodes[entry].op;
                debug_assert!(!linearized.contains(op));
                if let Some(next_state) = step(state, self.entries[op].input) {
                    linearized.set(op);
                    if cache.insert((linearized.clone(), next_state)) {
                        if cache.len() as u64 > max_cache_entries {
                            return SearchResult::Exhausted(format!(
                                "memo budget of {} MiB spent",
                                budget.max_cache_bytes >> 20
                            ));
                        }
                        stack.push((entry, state));
                        state = next_state;
                        self.lift(entry);
                        if self.entries[op].return_ns.is_some() {
                            finite_done += 1;
                            if finite_done == finite_total {
                                return SearchResult::Linearizable;
                            }
                        }
                        entry = self.nodes[HEAD].next;
                        continue;
                    }
                    linearized.clear(op);
                }
                entry = self.nodes[entry].next;
                continue;
            }

            // A return whose op is not linearized, or the end of the list
            // with only unplaceable indeterminate calls: backtrack.
            self.note_dead_end(&stack, state, entry);
            let Some((call, prev_state)) = stack.pop() else {
                return SearchResult::NotLinearizable;
            };
            let op = self.nodes[call].op;
            linearized.clear(op);
            if self.entries[op].return_ns.is_some() {
                finite_done -= 1;
            }
            state = prev_state;
            self.unlift(call);
            entry = self.nodes[call].next;
        }
    }
}
