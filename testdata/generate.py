#!/usr/bin/env python3
"""Generate the bundled test data for `dwh` (see shared/DESIGN.md section 2).

Writes three files into --out (default: this script's folder):

  users.jsonl        one Redis value per line (SET key = the value's "_id")
  restaurants.jsonl  one Redis value per line (SET key = the value's "_id"), menus inside
  orders.jsonl       one Kafka message value per line for topic order-service_orders (no key)

Everything is derived from random.Random(--seed); the same arguments give byte-identical
files. On stdout it prints a summary, including a Markdown table of the oddities injected
into orders.jsonl and the "truth" (current version of each order) used to check the CDM.

    python3 testdata/generate.py --seed 42            # the committed files
    python3 testdata/generate.py --orders 300 --out /tmp/small
"""
import argparse
import itertools
import json
import os
import random
from collections import Counter
from datetime import datetime, timedelta

TS = "%Y-%m-%d %H:%M:%S"
WEEK_START = datetime(2023, 9, 18)
FIRST_OBJECT_ID = 322519

# --- dictionaries ------------------------------------------------------------------------------
# (restaurant, {category: "dish; dish; ..."}). "Cалат Цезарь" in Гриль Хаус starts with a LATIN C.
MENUS = [
    ("PLove", {
        "Выпечка": "Пицца Маргарита; Пицца Пепперони; Пицца Четыре сыра; Пицца Гавайская; "
                   "Пицца Дьябло; Пицца Карбонара; Пицца с грибами; Кальцоне; "
                   "Фокачча с розмарином; Хлебные палочки",
        "Основные блюда": "Паста Карбонара; Паста Болоньезе; Лазанья мясная; Ризотто с грибами; "
                          "Равиоли с рикоттой; Ньокки в сливочном соусе; Паста с морепродуктами",
        "Закуски": "Брускетта с томатами; Капрезе; Антипасти ассорти; Сырные палочки; "
                   "Куриные крылья барбекю; Оливки маринованные",
        "Салаты": "Салат Цезарь; Салат Греческий; Салат с рукколой и креветками; Салат Оливье",
        "Супы": "Минестроне; Томатный суп; Крем-суп из шампиньонов",
        "Соусы": "Соус Песто; Соус Чесночный; Соус Барбекю",
        "Напитки": "Лимонад Домашний; Морс клюквенный; Кола 0,5 л",
        "Десерты": "Тирамису",
    }),
    ("Кофейня №1", {
        "Выпечка": "Круассан классический; Круассан с миндалём; Синнабон; Маффин черничный; "
                   "Маффин шоколадный; Пирожок с капустой; Пирожок с картофелем; Слойка с вишней; "
                   "Сырник запечённый; Ватрушка с творогом; Киш Лорен; Булочка с корицей",
        "Напитки": "Капучино; Латте; Американо; Флэт уайт; Раф ванильный; Какао",
        "Чай": "Чай чёрный Эрл Грей; Чай зелёный Сенча; Чай облепиховый; Чай имбирный; "
               "Чай травяной",
        "Десерты": "Чизкейк Нью-Йорк; Медовик; Наполеон; Эклер",
        "Закуски": "Сэндвич с ветчиной и сыром; Тост с авокадо",
        "Салаты": "Салат с киноа",
    }),
    ("Вкус Востока", {
        "Основные блюда": "Плов узбекский; Лагман жареный; Манты с бараниной; Шашлык из баранины; "
                          "Люля-кебаб из говядины; Курица терияки с рисом; Говядина по-сычуаньски; "
                          "Свинина в кисло-сладком соусе; Утка по-пекински; Долма",
        "Супы": "Шурпа; Лагман суп; Том ям с креветками; Суп мисо; Харчо; Рамен со свининой",
        "Закуски": "Хумус с лепёшкой; Гёдза с курицей; Спринг-роллы овощные; "
                   "Баклажаны по-грузински; Пхали ассорти",
        "Выпечка": "Самса с бараниной; Лепёшка тандырная; Чебурек с бараниной",
        "Салаты": "Ачичук; Салат Чука; Салат из свежих овощей",
        "Соусы": "Соус Сацебели; Соус Терияки; Соус Кисло-сладкий",
        "Гарниры": "Рис жасмин; Лапша удон",
        "Чай": "Чай зелёный с жасмином",
        "Напитки": "Айран",
    }),
    ("Гриль Хаус", {
        "Основные блюда": "Стейк Рибай; Стейк Стриплойн; Бургер Классический; Бургер с беконом; "
                          "Рёбра свиные BBQ; Куриная грудка гриль; Колбаски гриль ассорти; "
                          "Стейк из лосося; Шашлык из свинины",
        "Выпечка": "Пицца Мясная; Пицца Маргарита; Пицца Барбекю; Хачапури по-аджарски",
        "Закуски": "Луковые кольца; Куриные наггетсы; Начос с сыром; Крылья Баффало; "
                   "Сырные шарики; Гренки чесночные",
        "Гарниры": "Картофель фри; Картофель по-деревенски; Овощи гриль; Кукуруза гриль; "
                   "Пюре картофельное",
        "Соусы": "Соус Сырный; Соус Кетчуп; Соус Тартар",
        "Салаты": "Cалат Цезарь; Салат Коул слоу",
        "Супы": "Суп-гуляш",
        "Напитки": "Квас домашний",
    }),
]
# Price range (roubles) per category; pizzas get their own.
PRICES = {"Выпечка": (90, 350), "Основные блюда": (350, 1200), "Закуски": (190, 550),
          "Супы": (250, 490), "Салаты": (250, 550), "Соусы": (40, 90), "Напитки": (90, 290),
          "Гарниры": (120, 250), "Чай": (120, 290), "Десерты": (190, 390), "pizza": (450, 790)}
# Per-item category weights, roughly the dashboard mix of DESIGN §2.3.
CATEGORY_WEIGHTS = {"Выпечка": 21, "Основные блюда": 27, "Закуски": 13, "Супы": 4.5, "Салаты": 3,
                    "Соусы": 2.2, "Напитки": 1.5, "Гарниры": 2.5, "Чай": 1, "Десерты": 0.35}
RESTAURANT_WEIGHTS = [35, 12, 28, 25]

SURNAMES = ("Иванов Смирнов Кузнецов Попов Васильев Петров Соколов Михайлов Новиков Фёдоров "
            "Морозов Волков Алексеев Лебедев Семёнов Егоров Павлов Козлов Степанов Николаев Орлов "
            "Андреев Макаров Никитин Захаров Зайцев Соловьёв Борисов Яковлев Григорьев Романов "
            "Воробьёв Сергеев Кудрявцев Ефремов").split()
MALE = ("Александр Алексей Андрей Дмитрий Сергей Иван Михаил Николай Павел Владимир Евгений Юрий "
        "Олег Виктор Игорь Артём Максим Роман Денис Константин").split()
FEMALE = ("Анна Мария Елена Ольга Наталья Татьяна Ирина Екатерина Светлана Юлия Вера Дарья Полина "
          "Ксения Виктория Алина Марина Людмила Софья Анастасия").split()
PATRONYMIC = {"Алексей": "Алексее", "Андрей": "Андрее", "Дмитрий": "Дмитрие", "Сергей": "Сергее",
              "Павел": "Павло", "Игорь": "Игоре", "Михаил": "Михайло", "Николай": "Николае",
              "Евгений": "Евгенье", "Юрий": "Юрье"}  # stem of the patronymic; default name + "о"
TRANSLIT = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
                    "a b v g d e e zh z i y k l m n o p r s t u f kh ts ch sh sch - y - e yu ya"
                    .split()))


def hex_id(rng, used):
    while True:
        value = f"{rng.getrandbits(96):024x}"
        if value not in used:
            used.add(value)
            return value


def ts(rng, start, end):
    return start + timedelta(seconds=rng.randrange(int((end - start).total_seconds())))


def order_time(rng):
    """A moment in the week, mostly at lunch and dinner time."""
    hour = rng.choices(range(24), [1, 1, 0, 0, 0, 0, 1, 2, 4, 5, 6, 8, 12, 12, 9, 7, 7, 9, 12,
                                   12, 10, 7, 4, 2])[0]
    return WEEK_START + timedelta(days=rng.randrange(7), hours=hour,
                                  seconds=rng.randrange(3600))


def translit(text):
    return "".join(TRANSLIT.get(c, c) for c in text.lower()).replace("-", "")


def make_users(rng, count, used):
    users, logins = [], set()
    for _ in range(count):
        surname, father = rng.choice(SURNAMES), rng.choice(MALE)
        stem, male = PATRONYMIC.get(father, father + "о"), rng.random() < 0.5
        first = rng.choice(MALE if male else FEMALE)
        full_name = f"{surname}{'' if male else 'а'} {first} {stem}{'вич' if male else 'вна'}"
        login = rng.choice([f"{translit(first)}_{rng.randint(1970, 2004)}",
                            f"{translit(surname)}.{translit(first)[0]}",
                            f"{translit(first)}{rng.randint(1, 99)}"])
        while login in logins:
            login += str(rng.randint(0, 9))
        logins.add(login)
        users.append({"_id": hex_id(rng, used), "name": full_name, "login": login,
                      "update_ts_utc": ts(rng, datetime(2023, 6, 1), datetime(2023, 9, 15))
                      .strftime(TS)})
    return users


def make_restaurants(rng, used):
    restaurants = []
    for name, by_category in MENUS:
        menu = []
        for category, dishes in by_category.items():
            for dish in (d.strip() for d in dishes.split(";")):
                low, high = PRICES["pizza" if "Пицца" in dish else category]
                menu.append({"_id": hex_id(rng, used), "name": dish,
                             "price": rng.randint(low // 10, high // 10) * 10,
                             "category": category})
        rng.shuffle(menu)
        if name == "PLove":  # the real menu's oddity: one item with empty id, name and category
            empty = {"_id": "", "name": "", "price": 0, "category": ""}
            menu.insert(rng.randrange(len(menu)), empty)
        restaurants.append({"_id": hex_id(rng, used), "name": name, "menu": menu,
                            "update_ts_utc": ts(rng, datetime(2023, 9, 1), datetime(2023, 9, 15))
                            .strftime(TS)})
    return restaurants


# --- orders ------------------------------------------------------------------------------------
def is_pizza(dish):
    return "Пицца" in dish["name"]


def pick_items(rng, rest, n_items, want_pizza, want_soup):
    menu = [d for d in rest["menu"] if d["_id"]]
    chosen = []
    if want_pizza:
        chosen.append(rng.choice([d for d in menu if is_pizza(d)]))
    if want_soup:
        chosen.append(rng.choice([d for d in menu if d["category"] == "Супы"]))
    categories = sorted({d["category"] for d in menu})
    weights = [CATEGORY_WEIGHTS[c] for c in categories]
    while len(chosen) < n_items:
        category = rng.choices(categories, weights)[0]
        dish = rng.choice([d for d in menu if d["category"] == category])
        if dish not in chosen:
            chosen.append(dish)
    rng.shuffle(chosen)
    return [{"id": d["_id"], "name": d["name"], "price": d["price"],
             "quantity": rng.choices([1, 2, 3, 4, 5], [50, 25, 12, 8, 5])[0]} for d in chosen]


def statuses_for(rng, final_ts, final_status):
    """Status history ending at final_ts, newest first."""
    flow = (["OPEN", "COOKING", "DELIVERING", "CLOSED"] if final_status == "CLOSED"
            else rng.choice([["OPEN", "CANCELLED"], ["OPEN", "COOKING", "CANCELLED"]]))
    history, t = [], final_ts
    for status in reversed(flow):
        history.append({"status": status, "dttm": t.strftime(TS)})
        t -= timedelta(seconds=rng.randint(300, 2400))
    return history


def make_order(rng, oid, final_ts, user_id, rest_id, items, final_status):
    cost = sum(i["price"] * i["quantity"] for i in items)
    sent = final_ts + timedelta(days=7, seconds=rng.randint(5, 600))
    return {"object_id": oid, "object_type": "order", "sent_dttm": sent.strftime(TS),
            "payload": {"restaurant": {"id": rest_id}, "date": final_ts.strftime(TS),
                        "user": {"id": user_id}, "order_items": items, "bonus_payment": 0,
                        "cost": cost, "payment": cost, "bonus_grant": 0,
                        "statuses": statuses_for(rng, final_ts, final_status),
                        "final_status": final_status, "update_ts": final_ts.strftime(TS)}}


def with_status(rng, msg, status):
    """The same order (id, time, user, restaurant, items) with another final status."""
    p = msg["payload"]
    if p["final_status"] == status:
        return msg
    return make_order(rng, msg["object_id"], datetime.strptime(p["update_ts"], TS),
                      p["user"]["id"], p["restaurant"]["id"], p["order_items"], status)


def newer_version(rng, msg):
    """The same order re-sent later with the opposite final status and a newer update_ts."""
    new = json.loads(json.dumps(msg))
    p = new["payload"]
    status = "CANCELLED" if p["final_status"] == "CLOSED" else "CLOSED"
    t = datetime.strptime(p["update_ts"], TS) + timedelta(seconds=rng.randint(1800, 129600))
    p["statuses"].insert(0, {"status": status, "dttm": t.strftime(TS)})
    p["final_status"], p["update_ts"] = status, t.strftime(TS)
    new["sent_dttm"] = (t + timedelta(days=7, seconds=rng.randint(5, 600))).strftime(TS)
    return new


def base_orders(rng, n, users, restaurants, pizza_lovers, soup_fans):
    activity = [min(3.0, rng.lognormvariate(0, 0.8))          # heavy-tailed, capped
                * (2 if u["_id"] in pizza_lovers | soup_fans else 1) for u in users]
    finals = sorted(order_time(rng) for _ in range(n))
    pizza_rests = [r for r in restaurants if any(is_pizza(d) for d in r["menu"])]
    soup_rests = [r for r in restaurants if any(d["category"] == "Супы" for d in r["menu"])]
    orders, oid = [], FIRST_OBJECT_ID
    cum_activity = list(itertools.accumulate(activity))  # what choices(users, activity) builds
    for final_ts in finals:
        user = rng.choices(users, cum_weights=cum_activity)[0]
        want_pizza = user["_id"] in pizza_lovers and rng.random() < 0.75
        want_soup = user["_id"] in soup_fans and rng.random() < 0.6
        pool = [r for r in restaurants if (not want_pizza or r in pizza_rests)
                and (not want_soup or r in soup_rests)]
        rest = rng.choices(pool, [RESTAURANT_WEIGHTS[restaurants.index(r)] for r in pool])[0]
        n_items = max(rng.choices([1, 2, 3, 4, 5], [30, 30, 20, 12, 8])[0],
                      int(want_pizza) + int(want_soup))
        items = pick_items(rng, rest, n_items, want_pizza, want_soup)
        status = "CLOSED" if rng.random() < 0.85 else "CANCELLED"
        orders.append(make_order(rng, oid, final_ts, user["_id"], rest["_id"], items, status))
        oid += 1 + int(rng.expovariate(1 / 40))
    return orders


# --- oddities ----------------------------------------------------------------------------------
JUNK_KINDS = ("junk: truncated JSON", "junk: object_id non-numeric string",
              "junk: unknown object_type", "junk: payload without user",
              "junk: update_ts not a timestamp")
RESEND_KINDS = (("re-sent, in order: CLOSED -> CANCELLED", 4),
                ("re-sent, in order: CANCELLED -> CLOSED", 2),
                ("re-sent, newer arrives FIRST: CLOSED -> CANCELLED", 2),
                ("re-sent, newer arrives FIRST: CANCELLED -> CLOSED", 1),
                ("re-sent twice (3 versions, arrival v1 v3 v2)", 0))  # 0: exactly one
TEXT = "junk: non-JSON text"
EXTRA_JUNK = (("{}", "junk: {}"), ("null", "junk: null"), ("ping", TEXT),
              ("<html><body>502 Bad Gateway</body></html>", TEXT), ("order 322519 CLOSED", TEXT),
              ('""', 'junk: "" (a bare JSON string)'))
BAD_TIMESTAMPS = ("не время", "", "2023-13-45 99:99:99", 1695600000, "yesterday")


def encode(rng, msg):
    """Non-ASCII either \\uXXXX-escaped or raw UTF-8 — the same data either way."""
    return json.dumps(msg, ensure_ascii=rng.random() < 0.5)


def edit_orders(rng, orders, take, k, used, counts):
    """Orders naming things the dictionaries lack (all CLOSED, so they count), and the same
    dish twice in one order."""
    unknown = take(6)
    for i in unknown:
        orders[i] = with_status(rng, orders[i], "CLOSED")
    for i in unknown[:2]:
        orders[i]["payload"]["user"]["id"] = hex_id(rng, used)
        counts["order with unknown user id"] += 1
    for i in unknown[2:4]:
        items = orders[i]["payload"]["order_items"]
        items[4:] = []  # keep at most 5 items
        items.append({"id": hex_id(rng, used), "name": "Окрошка на квасе", "price": 390,
                      "quantity": 1})
        counts["order with a dish id in no menu (own name)"] += 1
    for i in unknown[4:]:
        orders[i]["payload"]["restaurant"]["id"] = hex_id(rng, used)
        orders[i]["payload"]["order_items"] = [
            {"id": hex_id(rng, used), "name": name, "price": price, "quantity": rng.randint(1, 3)}
            for name, price in (("Шаурма классическая", 320), ("Фалафель в пите", 290))]
        counts["order with unknown restaurant id (and its own dishes)"] += 1
    for i in take(2 * k):
        items = orders[i]["payload"]["order_items"]
        if len(items) < 5:
            items.insert(rng.randrange(len(items) + 1), dict(items[0], quantity=rng.randint(1, 3)))
            counts["same dish twice as two separate items"] += 1
    for o in orders:  # cost/payment after the edits above
        p = o["payload"]
        p["cost"] = p["payment"] = sum(i["price"] * i["quantity"] for i in p["order_items"])
        assert 1 <= len(p["order_items"]) <= 5


def junk_line(rng, kind, order, nth):
    """An order message spoilt the way `kind` says (nth: how many of this kind so far)."""
    o = json.loads(json.dumps(order))
    if kind == "junk: truncated JSON":
        line = encode(rng, o)
        return line[:rng.randint(10, len(line) - 5)]
    if kind == "junk: object_id non-numeric string":
        o["object_id"] = f"ORD-{o['object_id']}"
    elif kind == "junk: unknown object_type":
        o["object_type"] = "payment"
        o["payload"] = {"order_id": o["object_id"] - 1, "amount": o["payload"]["cost"],
                        "method": "card"}
    elif kind == "junk: payload without user":
        del o["payload"]["user"]
    else:
        o["payload"]["update_ts"] = BAD_TIMESTAMPS[nth % len(BAD_TIMESTAMPS)]
    return encode(rng, o)


def build_stream(rng, orders, used):
    """Turn base orders into the message lines, injecting every oddity. Returns (lines, counts)."""
    n = len(orders)
    k = max(2, round(n / 750))                      # scale of each oddity: 4 at 3000 orders
    slots = list(range(n))
    rng.shuffle(slots)
    take = lambda count: [slots.pop() for _ in range(count)]  # distinct base orders
    counts, placed = Counter(), []                  # placed: (position, seq, line)

    def put(pos, line, kind=None):
        placed.append((pos, len(placed), line))
        if kind:
            counts[kind] += 1

    edit_orders(rng, orders, take, k, used, counts)
    junk = {i: kind for kind in JUNK_KINDS for i in take(k)}
    resend = {i: kind for kind, m in RESEND_KINDS for i in take(m * k or 1)}
    for i, kind in resend.items():                  # the base status each kind starts from
        start = "CANCELLED" if "CANCELLED -> CLOSED" in kind else "CLOSED"
        orders[i] = with_status(rng, orders[i], start)

    valid = []                                      # (position, line) of valid order messages
    for i, o in enumerate(orders):
        if i in junk:
            put(i, junk_line(rng, junk[i], o, counts[junk[i]]), junk[i])
            continue
        line = encode(rng, o)
        put(i, line)
        valid.append((i, line))
        kind = resend.get(i)
        if kind is None:
            continue
        counts[kind] += 1
        newer, gap = newer_version(rng, o), rng.uniform(1, 300)
        if "3 versions" in kind:  # CLOSED -> CANCELLED -> CLOSED; newest arrives in the middle
            put(i + gap, encode(rng, newer_version(rng, newer)))
            gap *= 2
        pos = max(-0.5, i - gap) if "FIRST" in kind else i + gap
        line = encode(rng, newer)
        put(pos, line)
        valid.append((pos, line))

    for pos, line in rng.sample(valid, 8 * k):
        put(pos + rng.uniform(0.5, 500), line, "exact duplicate (identical line again)")
    for pos, line in rng.sample(valid, k):
        other = json.dumps(json.loads(line), ensure_ascii=not line.isascii())
        assert other != line
        put(pos + rng.uniform(0.5, 500), other, "duplicate with the other escaping (same data)")
    for j in range(2 * k):                          # junk lines from nowhere
        line, kind = EXTRA_JUNK[j % len(EXTRA_JUNK)]
        put(rng.uniform(0, n), line, kind)
    placed.sort()
    return [line for _, _, line in placed], counts


# --- truth & report ----------------------------------------------------------------------------
def parse_valid(line):
    try:
        m = json.loads(line)
        p = m["payload"]
        datetime.strptime(p["update_ts"], TS)
        if m["object_type"] != "order" or type(m["object_id"]) is not int or "user" not in p:
            return None
        return m
    except (ValueError, TypeError, KeyError):
        return None


def truth(lines, restaurants):
    """Current version (newest payload.update_ts) of each valid order, as
    (update_ts, final_status, user id, [(item id, item name)]): small enough for millions."""
    current = {}
    for m in filter(None, map(parse_valid, lines)):
        p = m["payload"]
        prev = current.get(m["object_id"])
        if prev is None or p["update_ts"] > prev[0]:
            current[m["object_id"]] = (p["update_ts"], p["final_status"], p["user"]["id"],
                                       [(i["id"], i["name"]) for i in p["order_items"]])
    category = {d["_id"]: d["category"] for r in restaurants for d in r["menu"]}
    per_user, mix, same_cat = Counter(), Counter(), 0
    for _, status, uid, items in current.values():
        cats = [category.get(i) for i, _ in items]
        known = [c for c in {i: c for (i, _), c in zip(items, cats)}.values() if c]
        if len(set(known)) < len(known):
            same_cat += 1
        if status != "CLOSED":
            continue
        for c in set(cats) - {None}:
            mix[c] += 1
        per_user["pizza", uid] += any("Пицца" in name for _, name in items)
        per_user["soup", uid] += "Супы" in cats
    return current, per_user, mix, same_cat


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(row + "\n" for row in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--orders", type=int, default=3000)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()
    if args.orders < 200 or args.users < 20:
        ap.error("need --orders >= 200 and --users >= 20 to fit every oddity")
    rng, used = random.Random(args.seed), set()

    users = make_users(rng, args.users, used)
    restaurants = make_restaurants(rng, used)
    ids = [u["_id"] for u in users]
    pizza_lovers = set(rng.sample(ids, 8))
    soup_fans = set(rng.sample(sorted(set(ids) - pizza_lovers), 8))
    orders = base_orders(rng, args.orders, users, restaurants, pizza_lovers, soup_fans)
    lines, counts = build_stream(rng, orders, used)
    del orders  # the lines are all that is left to write; millions of dicts are not kept

    os.makedirs(args.out, exist_ok=True)
    write_jsonl(os.path.join(args.out, "users.jsonl"),
                [json.dumps(u, ensure_ascii=False) for u in users])
    write_jsonl(os.path.join(args.out, "restaurants.jsonl"),
                [json.dumps(r, ensure_ascii=False) for r in restaurants])
    write_jsonl(os.path.join(args.out, "orders.jsonl"), lines)

    current, per_user, mix, same_cat = truth(lines, restaurants)
    closed = sum(status == "CLOSED" for _, status, _, _ in current.values())
    dishes = sum(len(r["menu"]) for r in restaurants)
    print(f"users.jsonl: {len(users)}  restaurants.jsonl: {len(restaurants)} ({dishes} menu items)"
          f"  orders.jsonl: {len(lines)} lines")
    print(f"distinct valid orders: {len(current)}, currently CLOSED: {closed}, "
          f"CANCELLED: {len(current) - closed}")
    for kind, need in (("pizza", 10), ("soup", 5)):
        hist = Counter(v for (k, _), v in per_user.items() if k == kind)
        hits = sum(c for v, c in hist.items() if v >= need)
        print(f"users with >= {need} CLOSED orders containing {kind}: {hits} (exactly {need}: "
              f"{hist[need]}, exactly {need - 1}: {hist[need - 1]})"
              + ("  WARNING: fewer than 5" if hits < 5 else ""))
    print("category mix (CLOSED orders containing the category): "
          + ", ".join(f"{c} {v}" for c, v in sorted(mix.items(), key=lambda x: (-x[1], x[0]))))
    counts["orders with two different dishes of one category (current versions)"] = same_cat
    valid = [x for x in lines if parse_valid(x)]
    counts["valid messages with \\uXXXX-escaped text"] = sum(x.isascii() for x in valid)
    counts["valid messages with raw UTF-8 text"] = sum(not x.isascii() for x in valid)
    junk = sum(v for kind, v in counts.items() if kind.startswith("junk"))
    print(f"junk lines: {junk} of {len(lines)} ({100 * junk / len(lines):.1f}%)")
    print("\n| oddity in orders.jsonl | count |\n|---|---|")
    for kind in sorted(counts):
        print(f"| {kind} | {counts[kind]} |")


if __name__ == "__main__":
    main()
