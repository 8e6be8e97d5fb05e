//! A deterministic corpus of hostile input: order messages for the orders topic and documents for
//! Redis, each with the fate dwh promises it — loaded as the data it is, or dead-lettered (a
//! document: left out).
//!
//! It is generated at test time from a seed, by a PRNG of its own (SplitMix64), so a seed gives
//! the same bytes on every machine and with every version of `rand`; only this generator is
//! committed. The orders that must load name users, restaurants and dishes of their own (ids and
//! names that are SQL-looking, emoji, right-to-left, control characters, up to the 256-byte key
//! bound; names up to 1 MB), so their showcases can be counted apart from the testdata's. The
//! fates follow the contract as documented, not dwh's code: bounds are written here as literals.

mod orders;
mod world;

use serde_json::Value;

use orders::{heaviest, loaded, order, refused, LOADED, REFUSED};
use world::World;

/// The documented bound of an order message and of a dictionary document.
pub const DOCUMENT_BOUND: usize = 1 << 20;
/// The documented bound of an id (and a category name), in bytes.
pub const KEY_BOUND: usize = 256;

/// What must become of a message or document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Stored (an order: in `stg.order_events`, then DDS and CDM; a document: in `stg.users` or
    /// `stg.restaurants`).
    Loaded,
    /// An order: in `dwh.dead_letters` with its raw bytes; a document: left out with a warning.
    Refused,
}

/// One hostile order message.
pub struct Message {
    pub class: &'static str,
    pub bytes: Vec<u8>,
    pub fate: Fate,
}

/// One hostile Redis document, stored under `key`.
pub struct Document {
    pub class: &'static str,
    pub key: String,
    pub value: Vec<u8>,
    pub fate: Fate,
}

/// The corpus: messages in the order they are to be produced, and the documents.
pub struct Corpus {
    pub messages: Vec<Message>,
    pub documents: Vec<Document>,
}

/// SplitMix64: small, fast, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// A JSON value as compact text (serde_json writes `\0` as the escape `\u0000`).
fn text_of(value: &Value) -> String {
    serde_json::to_string(value).unwrap()
}

/// Insert `bytes` in the middle of the first occurrence of `marker` in `text`.
fn splice(text: &str, marker: &str, bytes: &[u8]) -> Vec<u8> {
    let at = text.find(marker).expect("the marker is in the text") + marker.len() / 2;
    let mut out = text.as_bytes()[..at].to_vec();
    out.extend_from_slice(bytes);
    out.extend_from_slice(&text.as_bytes()[at..]);
    out
}

/// Arrays nested `depth` deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// The whole corpus for `seed`, shuffled: `loaded` orders that must load (cycling through
/// [`LOADED`]), the heaviest order and one exactly at the size bound, and the [`REFUSED`]
/// classes; and the documents.
pub fn corpus(seed: u64, loaded_orders: usize) -> Corpus {
    let mut rng = Rng::new(seed);
    let world = World::new(&mut rng);
    let mut documents = world::documents(&world, &mut rng);
    let mut object_id = 900_000_000;
    let (heavy, heavy_documents) = heaviest(object_id);
    documents.extend(heavy_documents);
    let mut at_bound = text_of(&order(&world, &mut rng, object_id + 1, -1, false)).into_bytes();
    at_bound.resize(DOCUMENT_BOUND, b' ');
    let mut messages = vec![
        heavy,
        Message {
            class: "exactly at the size bound",
            bytes: at_bound,
            fate: Fate::Loaded,
        },
    ];
    object_id += 1;
    for n in 0..loaded_orders {
        object_id += 1;
        let class = LOADED[n % LOADED.len()];
        let base = order(&world, &mut rng, object_id, n as i64, n % 100 == 1);
        messages.push(Message {
            class,
            bytes: loaded(class, base),
            fate: Fate::Loaded,
        });
    }
    for (class, count) in REFUSED {
        for n in 0..*count {
            object_id += 1;
            let base = order(&world, &mut rng, object_id, n as i64, false);
            messages.push(Message {
                class,
                bytes: refused(class, base, &mut rng, n),
                fate: Fate::Refused,
            });
        }
    }
    rng.shuffle(&mut messages);
    Corpus {
        messages,
        documents,
    }
}

/// The restaurant documents of the corpus that dwh must read, parsed (for the oracle's menus).
pub fn readable_restaurants(corpus: &Corpus) -> Vec<Value> {
    corpus
        .documents
        .iter()
        .filter(|d| d.fate == Fate::Loaded)
        .filter_map(|d| serde_json::from_slice::<Value>(&d.value).ok())
        .filter(|d| d.get("menu").is_some())
        .collect()
}
