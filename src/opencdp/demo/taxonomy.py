"""Rooms and categories of the demo home-and-furniture retailer.

Each room has "core" categories bought in steps (the kitchen set first, then table and
chairs); the remaining categories are accessories and consumables bought on the side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

ROOMS: tuple[str, ...] = (
    "kitchen",
    "living_room",
    "bedroom",
    "kids",
    "bathroom",
    "hallway",
    "office",
)
ROOM_LABELS: tuple[str, ...] = (
    "Kitchen", "Living room", "Bedroom", "Kids room", "Bathroom", "Hallway", "Home office",
)  # fmt: skip
KIDS = ROOMS.index("kids")

# How likely each room is to be the next one furnished (the kitchen usually comes first).
ROOM_PRIORITY: tuple[float, ...] = (14.0, 4.0, 1.6, 1.2, 1.0, 0.8, 0.7)
# Where shoppers browse or buy small things when not working on a project.
ROOM_BROWSE_WEIGHT: tuple[float, ...] = (0.24, 0.22, 0.16, 0.08, 0.16, 0.07, 0.07)


@dataclass(frozen=True)
class Category:
    room: int
    label: str
    slug: str
    nouns: tuple[str, ...]
    price: tuple[int, int]  # RUB, log-uniform between the bounds
    weight: float  # share of the assortment
    step: int = -1  # core step within the room; -1 = not core
    consumption: tuple[int, int] | None = None  # days a consumable lasts
    quantity: tuple[int, int] = (1, 1)
    material: str = "durable"  # durable | textile | consumable

    @property
    def path(self) -> str:
        return f"{ROOM_LABELS[self.room]} > {self.label}"


def _c(
    room: str,
    label: str,
    slug: str,
    nouns: str,
    lo: int,
    hi: int,
    weight: float,
    *,
    step: int = -1,
    consumption: tuple[int, int] | None = None,
    quantity: tuple[int, int] = (1, 1),
    material: str = "durable",
) -> Category:
    return Category(
        ROOMS.index(room),
        label,
        slug,
        tuple(nouns.split("|")),
        (lo, hi),
        weight,
        step=step,
        consumption=consumption,
        quantity=quantity,
        material=material,
    )


# fmt: off
CATEGORIES: tuple[Category, ...] = (
    _c("kitchen", "Kitchen sets", "kitchen-sets", "Кухонный гарнитур|Кухня модульная", 60_000, 450_000, 2.0, step=0),
    _c("kitchen", "Tables", "tables", "Стол обеденный|Стол раздвижной", 8_000, 60_000, 2.5, step=1),
    _c("kitchen", "Chairs", "chairs", "Стул|Стул мягкий|Табурет", 2_500, 15_000, 3.0, step=1, quantity=(2, 6)),
    _c("kitchen", "Cookware", "cookware", "Сковорода|Кастрюля|Набор кастрюль|Сотейник", 600, 12_000, 4.0),
    _c("kitchen", "Tableware", "tableware", "Тарелка|Набор посуды|Кружка|Бокалы, набор", 200, 6_000, 4.0, quantity=(1, 6)),
    _c("kitchen", "Storage", "storage", "Контейнер|Банка для сыпучих|Органайзер", 200, 3_000, 2.5, quantity=(1, 4)),
    _c("kitchen", "Textiles", "textiles", "Скатерть|Полотенце кухонное|Фартук", 300, 2_500, 2.0, quantity=(1, 3), material="textile"),
    _c("kitchen", "Household chemicals", "household-chemicals", "Средство для посуды|Таблетки для ПММ|Чистящее средство", 150, 900, 2.5, consumption=(30, 60), quantity=(1, 3), material="consumable"),
    _c("living_room", "Sofas", "sofas", "Диван|Диван угловой|Диван-кровать", 20_000, 150_000, 3.0, step=0),
    _c("living_room", "Coffee tables", "coffee-tables", "Журнальный столик|Столик приставной", 3_000, 30_000, 2.0, step=1),
    _c("living_room", "TV stands", "tv-stands", "Тумба под ТВ|Медиатумба", 5_000, 40_000, 1.5),
    _c("living_room", "Shelving", "shelving", "Стеллаж|Полка настенная|Книжный шкаф", 3_000, 35_000, 2.0),
    _c("living_room", "Lighting", "lighting", "Торшер|Люстра|Настольная лампа", 1_000, 20_000, 2.5),
    _c("living_room", "Rugs", "rugs", "Ковёр|Ковёр безворсовый", 2_000, 40_000, 2.0, material="textile"),
    _c("living_room", "Decor", "decor", "Ваза|Рамка для фото|Плед|Подушка декоративная", 300, 6_000, 4.0, material="textile"),
    _c("living_room", "Candles & fragrances", "candles", "Свеча ароматическая|Диффузор ароматический", 250, 2_500, 2.5, consumption=(30, 75), quantity=(1, 3), material="consumable"),
    _c("bedroom", "Beds", "beds", "Кровать двуспальная|Кровать с подъёмным механизмом", 15_000, 120_000, 2.5, step=0),
    _c("bedroom", "Mattresses", "mattresses", "Матрас пружинный|Матрас беспружинный", 8_000, 80_000, 2.0, step=1),
    _c("bedroom", "Wardrobes", "wardrobes", "Шкаф-купе|Шкаф распашной", 15_000, 120_000, 2.0),
    _c("bedroom", "Bed linen", "bed-linen", "Комплект постельного белья|Простыня на резинке", 1_500, 9_000, 3.5, quantity=(1, 2), material="textile"),
    _c("bedroom", "Pillows & duvets", "pillows", "Подушка|Одеяло|Наматрасник", 700, 7_000, 2.5, quantity=(1, 2), material="textile"),
    _c("bedroom", "Bedside tables", "bedside-tables", "Прикроватная тумба|Комод", 3_000, 25_000, 2.0),
    _c("kids", "Kids beds", "kids-beds", "Детская кровать|Кровать-чердак", 10_000, 60_000, 1.5, step=0),
    _c("kids", "Desks", "desks", "Парта растущая|Письменный стол детский", 6_000, 30_000, 1.2, step=1),
    _c("kids", "Toys", "toys", "Конструктор|Мягкая игрушка|Ящик для игрушек", 300, 5_000, 2.5),
    _c("kids", "Textiles", "kids-textiles", "Детское постельное бельё|Коврик игровой", 500, 4_000, 1.5, material="textile"),
    _c("bathroom", "Cabinets", "cabinets", "Тумба с раковиной|Шкаф-пенал", 5_000, 45_000, 1.5, step=0),
    _c("bathroom", "Towels", "towels", "Полотенце махровое|Набор полотенец|Халат", 300, 2_000, 3.0, quantity=(1, 4), material="textile"),
    _c("bathroom", "Accessories", "accessories", "Дозатор для мыла|Коврик для ванной|Шторка для ванной", 200, 4_000, 2.5),
    _c("bathroom", "Cosmetics", "cosmetics", "Гель для душа|Крем для рук|Шампунь|Мыло жидкое", 150, 1_500, 3.5, consumption=(30, 90), quantity=(1, 3), material="consumable"),
    _c("hallway", "Wardrobes", "hallway-wardrobes", "Прихожая|Шкаф для прихожей", 10_000, 70_000, 1.2, step=0),
    _c("hallway", "Shoe cabinets", "shoe-cabinets", "Обувница|Банкетка", 3_000, 20_000, 1.5, step=1),
    _c("hallway", "Mirrors", "mirrors", "Зеркало настенное|Зеркало напольное", 1_500, 15_000, 1.5),
    _c("hallway", "Shoe care", "shoe-care", "Крем для обуви|Спрей водоотталкивающий", 200, 1_000, 1.2, consumption=(60, 120), quantity=(1, 2), material="consumable"),
    _c("office", "Desks", "office-desks", "Письменный стол|Компьютерный стол", 7_000, 45_000, 1.5, step=0),
    _c("office", "Office chairs", "office-chairs", "Кресло офисное|Кресло компьютерное", 5_000, 40_000, 1.5, step=0),
    _c("office", "Storage", "office-storage", "Тумба мобильная|Органайзер настольный", 1_000, 10_000, 1.5),
    _c("office", "Stationery", "stationery", "Бумага А4|Блокнот|Набор ручек", 100, 1_500, 1.2, consumption=(45, 120), quantity=(1, 3), material="consumable"),
)
# fmt: on

SEARCH_QUERIES: tuple[tuple[str, ...], ...] = (
    (
        "кухонный гарнитур",
        "стол обеденный",
        "стулья для кухни",
        "сковорода",
        "посуда",
        "таблетки для посудомойки",
    ),
    (
        "диван угловой",
        "диван-кровать",
        "журнальный столик",
        "торшер",
        "ковёр",
        "свечи ароматические",
    ),
    ("кровать 160x200", "матрас", "шкаф-купе", "постельное бельё", "подушка", "комод"),
    ("детская кровать", "парта", "кровать-чердак", "игрушки"),
    ("тумба с раковиной", "полотенца", "гель для душа", "коврик для ванной"),
    ("прихожая", "обувница", "зеркало", "крем для обуви"),
    ("письменный стол", "офисное кресло", "стеллаж", "бумага а4"),
)


@dataclass(frozen=True)
class RoomPlan:
    """Array view of the taxonomy used by the vectorised simulation."""

    steps: npt.NDArray[np.int64]  # (rooms, max_steps, 2) core category ids, -1 padded
    n_steps: npt.NDArray[np.int64]  # (rooms,)
    side: npt.NDArray[np.int64]  # (rooms, max_side) non-core category ids, -1 padded
    n_side: npt.NDArray[np.int64]  # (rooms,)
    all_cats: npt.NDArray[np.int64]  # (rooms, max_cats) all category ids, -1 padded
    n_cats: npt.NDArray[np.int64]  # (rooms,)


def room_plan() -> RoomPlan:
    n_rooms = len(ROOMS)
    by_room = [[i for i, c in enumerate(CATEGORIES) if c.room == r] for r in range(n_rooms)]
    max_step = max(c.step for c in CATEGORIES) + 1
    steps = np.full((n_rooms, max_step, 2), -1, dtype=np.int64)
    n_steps = np.zeros(n_rooms, dtype=np.int64)
    side_lists = [[i for i in cats if CATEGORIES[i].step < 0] for cats in by_room]
    for r, cats in enumerate(by_room):
        for i in cats:
            step = CATEGORIES[i].step
            if step >= 0:
                slot = int((steps[r, step] >= 0).sum())
                steps[r, step, slot] = i
                n_steps[r] = max(n_steps[r], step + 1)
    width = max(len(s) for s in side_lists)
    side = np.full((n_rooms, width), -1, dtype=np.int64)
    for r, s in enumerate(side_lists):
        side[r, : len(s)] = s
    all_width = max(len(c) for c in by_room)
    all_cats = np.full((n_rooms, all_width), -1, dtype=np.int64)
    for r, cats in enumerate(by_room):
        all_cats[r, : len(cats)] = cats
    return RoomPlan(
        steps=steps,
        n_steps=n_steps,
        side=side,
        n_side=np.array([len(s) for s in side_lists], dtype=np.int64),
        all_cats=all_cats,
        n_cats=np.array([len(c) for c in by_room], dtype=np.int64),
    )
