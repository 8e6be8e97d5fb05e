//! Who and what the hostile orders name: users, restaurants and dishes with odd ids and names,
//! and the documents Redis holds for them (readable, spoiled, or none).

use serde_json::{json, Value};

use super::{nested, splice, text_of, Document, Fate, Rng, DOCUMENT_BOUND, KEY_BOUND};

/// Text a careless loader chokes on, all of it valid data.
pub(super) const ODD_TEXT: &[&str] = &[
    "'; DROP TABLE dds.h_user; --",
    "Robert'); DELETE FROM cdm.user_tags WHERE ('1' = '1",
    "$1 $$ :name ? @p E'\\x00' COPY stdin",
    "😀👍🏽👩‍👩‍👧‍👦 🍣",
    "مستخدم ١٢٣ — עברית",
    "\u{202e}gnp.exe\u{202c}",
    " ",
    "null",
    "NULL",
    r"\u0000",
    "a\"b\\c'd`e",
    "line\nbreak\ttab\r",
    "\u{1}\u{7f}\u{1f}\u{85}",
    "%_*?[]^$.|(?i)",
    "zero\u{200b}width\u{feff}",
    "Ｆｕｌｌｗｉｄｔｈ",
    "e\u{301}\u{301}\u{301}",
    "𝕳𝖔𝖘𝖙𝖎𝖑𝖊 \u{10ffff}",
    "<script>alert(1)</script>",
    "{\"object_id\": 1}",
];

/// Categories of the hostile menus (the empty one is real: DESIGN §2.2).
const ODD_CATEGORIES: &[&str] = &[
    "Супы 🍲",
    "'; DROP TABLE dds.h_category; --",
    "",
    "עברית 123",
    "NULL",
    "\u{1f}ctl",
    "Выпечка",
];

/// A dish of a hostile menu.
#[derive(Clone)]
pub struct Dish {
    pub id: String,
    pub name: String,
    pub category: Option<String>,
}

/// A restaurant the hostile orders name, with the document Redis holds for it.
pub struct Restaurant {
    pub id: String,
    pub menu: Vec<Dish>,
}

/// Who and what the hostile orders name.
pub struct World {
    pub users: Vec<String>,
    pub restaurants: Vec<Restaurant>,
}

impl World {
    pub(super) fn new(rng: &mut Rng) -> World {
        let mut users: Vec<String> = ODD_TEXT.iter().map(|t| t.to_string()).collect();
        users.push("u".repeat(KEY_BOUND));
        users.push("й".repeat(KEY_BOUND / 2));
        users.extend((0..USER_DOCUMENT_FAULTS.len()).map(|n| format!("user-with-bad-doc-{n}")));
        let mut restaurants = Vec::new();
        let ids = [
            "r'; DROP TABLE stg.restaurants; --".to_owned(),
            "🍕🍣 Ресторан \u{202b}مطعم".to_owned(),
            "r".repeat(KEY_BOUND),
            "ресторан\ttab".to_owned(),
        ];
        for (r, id) in ids.into_iter().enumerate() {
            let menu = (0..8)
                .map(|k| Dish {
                    id: match k {
                        0 => format!("{}{r}", "d".repeat(KEY_BOUND - 1)),
                        _ => format!("r{r}-{}-{k}", rng.pick(ODD_TEXT)),
                    },
                    name: match k {
                        // One very long name per menu: it travels in every order that has it.
                        1 => format!("{r}: {}", "Очень длинное название 🍲 ".repeat(2_500)),
                        _ => format!("{} #{r}{k}", rng.pick(ODD_TEXT)),
                    },
                    category: (k != 7).then(|| rng.pick(ODD_CATEGORIES).to_string()),
                })
                .collect();
            restaurants.push(Restaurant { id, menu });
        }
        for n in 0..RESTAURANT_DOCUMENT_FAULTS.len() {
            let menu = (0..5)
                .map(|k| Dish {
                    id: format!("bad-r{n}-d{k}"),
                    name: format!("{} #{n}{k}", rng.pick(ODD_TEXT)),
                    category: Some(rng.pick(ODD_CATEGORIES).to_string()),
                })
                .collect();
            restaurants.push(Restaurant {
                id: format!("restaurant-with-bad-doc-{n}"),
                menu,
            });
        }
        World { users, restaurants }
    }

    /// The restaurant document as Redis should hold it.
    pub(super) fn restaurant_doc(restaurant: &Restaurant) -> Value {
        let menu: Vec<Value> = restaurant
            .menu
            .iter()
            .map(|d| json!({"_id": d.id, "name": d.name, "price": 100, "category": d.category}))
            .collect();
        json!({"_id": restaurant.id, "name": format!("{} 🍽", restaurant.id), "menu": menu,
               "update_ts_utc": "2023-08-11 16:45:00"})
    }
}

/// How a user's document is spoiled, one per `user-with-bad-doc-<n>`.
const USER_DOCUMENT_FAULTS: &[&str] = &[
    r"\u0000 in a name",
    "an unpaired surrogate",
    "invalid UTF-8",
    "over 1 MiB",
    "10 MB",
    "nested 100 deep",
    "a name that is not a string",
    "a login that is a number",
    "an _id over 256 bytes",
    "an empty _id",
    "update_ts_utc in another format",
    "an array of the field values",
    "not JSON",
    "a number numeric cannot hold",
    "neither a user nor a restaurant",
];

/// How a restaurant's document is spoiled, one per `restaurant-with-bad-doc-<n>`.
const RESTAURANT_DOCUMENT_FAULTS: &[&str] = &[
    r"\u0000 in a category",
    "a category that is a number",
    "a category over 256 bytes",
    "a dish id over 256 bytes",
    "a menu that is not an array",
    "a menu item that is not an object",
    "invalid UTF-8",
    "an unpaired surrogate in a dish name",
    "nested 100 deep",
];

fn user_doc(id: &str, rng: &mut Rng) -> Value {
    json!({"_id": id, "name": format!("{} {}", rng.pick(ODD_TEXT), rng.pick(ODD_TEXT)),
           "login": rng.pick(ODD_TEXT), "update_ts_utc": "2023-08-11 16:45:00"})
}

fn spoiled_user(fault: &str, id: &str, rng: &mut Rng) -> Vec<u8> {
    let mut doc = user_doc(id, rng);
    doc["name"] = json!("Вера Ефремова");
    match fault {
        r"\u0000 in a name" => doc["name"] = json!("Вера\0Ефремова"),
        "an unpaired surrogate" => {
            return text_of(&doc).replace("Вера", r"\udc00Вера").into_bytes();
        }
        "invalid UTF-8" => return splice(&text_of(&doc), "Вера", b"\xc3\x28"),
        "over 1 MiB" => doc["bio"] = json!("x".repeat(DOCUMENT_BOUND)),
        "10 MB" => doc["bio"] = json!("y".repeat(10_000_000)),
        "nested 100 deep" => {
            let text = text_of(&doc);
            return text
                .replacen('{', &format!("{{\"deep\": {}, ", nested(100)), 1)
                .into_bytes();
        }
        "a name that is not a string" => doc["name"] = json!({"first": "Вера"}),
        "a login that is a number" => doc["login"] = json!(42),
        "an _id over 256 bytes" => doc["_id"] = json!(format!("{id}{}", "x".repeat(300))),
        "an empty _id" => doc["_id"] = json!(""),
        "update_ts_utc in another format" => doc["update_ts_utc"] = json!("2023-08-11T16:45:00Z"),
        "an array of the field values" => {
            return text_of(&json!([id, "Вера", "vera"])).into_bytes()
        }
        "not JSON" => return text_of(&doc).as_bytes()[..20].to_vec(),
        "a number numeric cannot hold" => {
            return text_of(&doc)
                .replacen('{', "{\"rating\": 1e-20000, ", 1)
                .into_bytes();
        }
        "neither a user nor a restaurant" => {
            doc.as_object_mut().unwrap().remove("login");
        }
        other => unreachable!("{other}"),
    }
    text_of(&doc).into_bytes()
}

fn spoiled_restaurant(fault: &str, restaurant: &Restaurant) -> Vec<u8> {
    let mut doc = World::restaurant_doc(restaurant);
    match fault {
        r"\u0000 in a category" => doc["menu"][0]["category"] = json!("Су\0пы"),
        "a category that is a number" => doc["menu"][1]["category"] = json!(5),
        "a category over 256 bytes" => doc["menu"][2]["category"] = json!("c".repeat(3_000)),
        "a dish id over 256 bytes" => doc["menu"][3]["_id"] = json!("d".repeat(2_800)),
        "a menu that is not an array" => doc["menu"] = json!({"d": doc["menu"][0].clone()}),
        "a menu item that is not an object" => doc["menu"][4] = json!("bad-d"),
        "invalid UTF-8" => return splice(&text_of(&doc), "menu", b"\xff"),
        "an unpaired surrogate in a dish name" => {
            return text_of(&doc)
                .replacen("\"name\":\"", "\"name\":\"\\ud800", 2)
                .into_bytes();
        }
        "nested 100 deep" => {}
        other => unreachable!("{other}"),
    }
    let text = text_of(&doc);
    if fault == "nested 100 deep" {
        return text
            .replacen('{', &format!("{{\"deep\": {}, ", nested(100)), 1)
            .into_bytes();
    }
    text.into_bytes()
}

/// The documents of the hostile world: readable ones for some users and every good restaurant,
/// spoiled ones for the `*-with-bad-doc-*` ids; the other users have none.
pub(super) fn documents(world: &World, rng: &mut Rng) -> Vec<Document> {
    let mut docs = Vec::new();
    for (n, user) in world.users.iter().enumerate() {
        if let Some(fault) = user
            .strip_prefix("user-with-bad-doc-")
            .map(|k| USER_DOCUMENT_FAULTS[k.parse::<usize>().unwrap()])
        {
            docs.push(Document {
                class: fault,
                key: user.clone(),
                value: spoiled_user(fault, user, rng),
                fate: Fate::Refused,
            });
        } else if n % 3 != 2 {
            let mut doc = user_doc(user, rng);
            if n % 3 == 1 {
                doc["name"] = json!(format!("{} {}", user, "Имя Фамилия 😀 ".repeat(200)));
            }
            docs.push(Document {
                class: "odd but readable user",
                key: user.clone(),
                value: text_of(&doc).into_bytes(),
                fate: Fate::Loaded,
            });
        }
    }
    for restaurant in &world.restaurants {
        match restaurant
            .id
            .strip_prefix("restaurant-with-bad-doc-")
            .map(|k| RESTAURANT_DOCUMENT_FAULTS[k.parse::<usize>().unwrap()])
        {
            Some(fault) => docs.push(Document {
                class: fault,
                key: restaurant.id.clone(),
                value: spoiled_restaurant(fault, restaurant),
                fate: Fate::Refused,
            }),
            None => docs.push(Document {
                class: "odd but readable restaurant",
                key: restaurant.id.clone(),
                value: text_of(&World::restaurant_doc(restaurant)).into_bytes(),
                fate: Fate::Loaded,
            }),
        }
    }
    docs
}
