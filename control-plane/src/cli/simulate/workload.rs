//! The simulated population: sessions (page visits) arriving over a window, each with a device
//! profile and a few chat turns separated by the user's reading and typing time. Seeded, so
//! both passes of a run (server only, then hybrid) replay exactly the same workload.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::profiles::{self, Profile};

/// One page visit.
#[derive(Clone, Debug)]
pub struct Session {
    /// Index of its profile.
    pub profile: usize,
    /// When it starts, from the start of the pass.
    pub start: Duration,
    /// Whether the model is in the browser's cache when it starts.
    pub cached: bool,
    /// Whether its engine fails to load.
    pub load_fails: bool,
    /// From the page's opening to the first message: the user reads the page and types (drawn
    /// as the pauses between turns are). The app starts loading the model when the page opens.
    pub first_message: Duration,
    /// Its chat turns, in order.
    pub turns: Vec<Turn>,
}

/// One user message and what follows it.
#[derive(Clone, Debug)]
pub struct Turn {
    /// The user's message.
    pub user: String,
    /// `max_tokens` of the request.
    pub max_tokens: u32,
    /// Pause after the answer before the next message.
    pub think: Duration,
}

/// The shape of a population.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Sessions in the run.
    pub sessions: usize,
    /// Sessions start uniformly over this window.
    pub window: Duration,
    /// Most turns per session (at least 1; each session has 1 to this many).
    pub max_turns: usize,
    /// Mean pause between turns (exponential, clamped to a quarter to four times the mean).
    pub mean_think: Duration,
    /// The seed.
    pub seed: u64,
}

const TOPICS: &[&str] = &[
    "how tides work",
    "the history of the printing press",
    "why the sky is blue",
    "how vaccines train the immune system",
    "what a compiler does",
    "how bees make honey",
    "the causes of the French Revolution",
    "how a refrigerator keeps food cold",
    "what black holes are",
    "how to start learning the guitar",
    "the water cycle",
    "how credit cards work",
];

const CONTEXT: &[&str] = &[
    "Our team ships a small web app that helps people plan weekly meals. Users type what they have in the fridge and the app suggests recipes, a shopping list and a rough cost per portion.",
    "The museum is reorganizing its east wing around the theme of navigation: star charts, early compasses, a reconstructed astrolabe and the logbooks of two nineteenth-century whaling ships.",
    "The city council is debating whether to turn a four-lane road into two lanes with protected bike paths. Shop owners worry about deliveries, while residents cite noise and safety.",
    "I am preparing a short talk for new employees about our code review process: small pull requests, one approving reviewer, automated tests before merge, and a written description of each change.",
    "Last spring we planted tomatoes, beans and squash in raised beds. The tomatoes cracked after heavy rain, the beans climbed well, and the squash leaves turned white in late summer.",
    "A customer wrote that their order arrived two weeks late, the box was damaged, and one of three items was missing. They asked for a refund of the missing item and compensation for the delay.",
];

const ASKS: &[&str] = &[
    "Summarize this in three sentences.",
    "What are the main risks, and how would you address them?",
    "Write a friendly reply of about one paragraph.",
    "List five questions someone might ask about it.",
];

impl Shape {
    /// The sessions of this shape, drawn with its seed.
    pub fn sessions(&self, profiles: &[Profile]) -> Vec<Session> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut out: Vec<Session> = (0..self.sessions)
            .map(|_| {
                let profile = profiles::pick(profiles, rng.random::<f64>());
                let p = &profiles[profile];
                let start = self.window.mul_f64(rng.random::<f64>());
                let cached = rng.random::<f64>() < p.cached_share;
                let load_fails = rng.random::<f64>() < p.load_failure_rate;
                let turns = (0..rng.random_range(1..=self.max_turns.max(1)))
                    .map(|_| self.turn(&mut rng))
                    .collect();
                let first_message = self.pause(&mut rng);
                Session {
                    profile,
                    start,
                    cached,
                    load_fails,
                    first_message,
                    turns,
                }
            })
            .collect();
        out.sort_by_key(|s| s.start);
        out
    }

    /// One chat turn: a short question (half), a paragraph with a request (a third) or three
    /// paragraphs with a request (the rest).
    fn turn(&self, rng: &mut StdRng) -> Turn {
        let kind = rng.random::<f64>();
        let pick = |rng: &mut StdRng, list: &[&'static str]| list[rng.random_range(0..list.len())];
        let (user, max_tokens) = if kind < 0.5 {
            (format!("Explain {} briefly.", pick(rng, TOPICS)), 64)
        } else if kind < 0.83 {
            (
                format!("{}\n\n{}", pick(rng, CONTEXT), pick(rng, ASKS)),
                128,
            )
        } else {
            let paragraphs: Vec<&str> = (0..3).map(|_| pick(rng, CONTEXT)).collect();
            (
                format!("{}\n\n{}", paragraphs.join("\n\n"), pick(rng, ASKS)),
                160,
            )
        };
        let think = self.pause(rng);
        Turn {
            user,
            max_tokens,
            think,
        }
    }

    /// A user's pause to read and type: exponential, clamped to [0.25, 4] times the mean.
    fn pause(&self, rng: &mut StdRng) -> Duration {
        let u: f64 = rng.random_range(1e-9..1.0);
        self.mean_think.mul_f64((-u.ln()).clamp(0.25, 4.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_population() {
        let profiles = profiles::load(None).unwrap();
        let shape = Shape {
            sessions: 200,
            window: Duration::from_secs(60),
            max_turns: 4,
            mean_think: Duration::from_secs(5),
            seed: 7,
        };
        let a = shape.sessions(&profiles);
        let b = shape.sessions(&profiles);
        assert_eq!(a.len(), 200);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (x.profile, x.start, x.cached, x.first_message),
                (y.profile, y.start, y.cached, y.first_message)
            );
            assert!(x.first_message >= shape.mean_think / 4);
            assert!(x.first_message <= shape.mean_think * 4);
            assert_eq!(x.turns.len(), y.turns.len());
            assert_eq!(x.turns[0].user, y.turns[0].user);
        }
        assert!(a.windows(2).all(|w| w[0].start <= w[1].start));
        assert!(a.iter().all(|s| (1..=4).contains(&s.turns.len())));
        // Every profile appears in a population this large.
        for i in 0..profiles.len() {
            assert!(a.iter().any(|s| s.profile == i), "profile {i} missing");
        }
        let other = Shape { seed: 8, ..shape }.sessions(&profiles);
        assert!(a.iter().zip(&other).any(|(x, y)| x.start != y.start));
    }
}
