"""Static reference data for the demo shop: cities, names, brands and devices."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class City:
    name: str
    timezone: str
    utc_offset_hours: int  # Russia has not observed DST since 2014
    weight: float  # roughly the population in millions


CITIES: tuple[City, ...] = (
    City("Moscow", "Europe/Moscow", 3, 13.1),
    City("Saint Petersburg", "Europe/Moscow", 3, 5.6),
    City("Novosibirsk", "Asia/Novosibirsk", 7, 1.63),
    City("Yekaterinburg", "Asia/Yekaterinburg", 5, 1.54),
    City("Kazan", "Europe/Moscow", 3, 1.31),
    City("Krasnoyarsk", "Asia/Krasnoyarsk", 7, 1.21),
    City("Nizhny Novgorod", "Europe/Moscow", 3, 1.21),
    City("Chelyabinsk", "Asia/Yekaterinburg", 5, 1.18),
    City("Ufa", "Asia/Yekaterinburg", 5, 1.16),
    City("Samara", "Europe/Samara", 4, 1.16),
    City("Rostov-on-Don", "Europe/Moscow", 3, 1.14),
    City("Krasnodar", "Europe/Moscow", 3, 1.10),
    City("Omsk", "Asia/Omsk", 6, 1.10),
    City("Voronezh", "Europe/Moscow", 3, 1.05),
    City("Perm", "Asia/Yekaterinburg", 5, 1.03),
    City("Tyumen", "Asia/Yekaterinburg", 5, 0.85),
    City("Khabarovsk", "Asia/Vladivostok", 10, 0.62),
    City("Irkutsk", "Asia/Irkutsk", 8, 0.61),
    City("Vladivostok", "Asia/Vladivostok", 10, 0.60),
    City("Kaliningrad", "Europe/Kaliningrad", 2, 0.49),
)

MALE_FIRST_NAMES: tuple[str, ...] = (
    "Александр", "Дмитрий", "Максим", "Сергей", "Андрей", "Алексей", "Артём", "Илья",
    "Кирилл", "Михаил", "Никита", "Матвей", "Роман", "Егор", "Арсений", "Иван", "Денис",
    "Евгений", "Даниил", "Тимофей", "Владислав", "Игорь", "Владимир", "Павел", "Руслан",
    "Марк", "Константин", "Тимур", "Олег", "Ярослав", "Антон", "Николай", "Глеб",
    "Степан", "Юрий", "Вадим", "Виктор", "Григорий", "Фёдор", "Лев",
)  # fmt: skip

FEMALE_FIRST_NAMES: tuple[str, ...] = (
    "Анастасия", "Анна", "Мария", "Елена", "Дарья", "Алина", "Ирина", "Екатерина", "Арина",
    "Полина", "Ольга", "Юлия", "Татьяна", "Наталья", "Виктория", "Елизавета", "Ксения",
    "Милана", "Вероника", "Алиса", "Валерия", "Александра", "Ульяна", "Кристина", "София",
    "Марина", "Светлана", "Варвара", "Диана", "Яна", "Кира", "Ангелина", "Людмила",
    "Маргарита", "Ева", "Надежда", "Валентина", "Галина", "Любовь", "Оксана",
)  # fmt: skip

# Male forms; female forms are derived by ``female_surname``.
SURNAMES: tuple[str, ...] = (
    "Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов",
    "Новиков", "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров",
    "Павлов", "Козлов", "Степанов", "Николаев", "Орлов", "Андреев", "Макаров", "Никитин",
    "Захаров", "Зайцев", "Соловьёв", "Борисов", "Яковлев", "Григорьев", "Романов",
    "Воробьёв", "Сергеев", "Кузьмин", "Фролов", "Александров", "Дмитриев", "Королёв",
    "Гусев", "Киселёв", "Ильин", "Максимов", "Поляков", "Сорокин", "Виноградов", "Ковалёв",
    "Белов", "Медведев", "Антонов", "Тарасов", "Жуков", "Баранов", "Филиппов", "Комаров",
    "Давыдов", "Беляев", "Герасимов", "Богданов", "Осипов", "Сидоров", "Матвеев", "Титов",
    "Марков", "Миронов", "Крылов", "Куликов", "Карпов", "Власов", "Мельников", "Денисов",
    "Гаврилов", "Тихонов", "Казаков", "Афанасьев", "Данилов", "Савельев", "Тимофеев",
    "Фомин", "Чернов", "Абрамов", "Мартынов", "Ефимов", "Щербаков", "Назаров", "Калинин",
    "Исаев", "Быков", "Маслов", "Родионов", "Коновалов", "Лазарев", "Воронин", "Климов",
    "Филатов", "Голубев", "Кудрявцев", "Прохоров", "Наумов", "Журавлёв", "Соболев",
    "Островский", "Покровский", "Успенский", "Шевченко", "Бондаренко", "Коваленко",
    "Кравченко", "Ткаченко",
)  # fmt: skip

_TRANSLIT = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
    "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
    "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
    "я": "ya",
}  # fmt: skip


def translit(text: str) -> str:
    """Lowercase Latin transliteration used for e-mail local parts."""
    return "".join(_TRANSLIT.get(ch, ch) for ch in text.lower())


def female_surname(male: str) -> str:
    if male.endswith("ский"):
        return male[:-2] + "ая"
    if male.endswith(("ов", "ев", "ёв", "ин", "ын")):
        return male + "а"
    return male


EMAIL_DOMAINS: tuple[tuple[str, float], ...] = (
    ("mail.ru", 0.30), ("yandex.ru", 0.24), ("gmail.com", 0.18), ("bk.ru", 0.05),
    ("inbox.ru", 0.04), ("list.ru", 0.04), ("rambler.ru", 0.04), ("ya.ru", 0.05),
    ("icloud.com", 0.06),
)  # fmt: skip

# House brands by kind of goods.
BRANDS: dict[str, tuple[str, ...]] = {
    "durable": ("Nordhus", "Домовой", "Skandi", "Mebelart", "Fabrika №7", "Hyggelig", "Lumo Home"),
    "textile": ("Textura", "Уютный Дом", "Hyggelig", "Skandi"),
    "consumable": ("Aroma Lab", "Чистый Дом", "Lumo Home"),
    "kids": ("Kiddo", "Домовой", "Skandi"),
    "office": ("Ofis Pro", "Nordhus", "Mebelart"),
}

SERIES: tuple[str, ...] = (
    "ЛУНД", "ЭКЕБУ", "ФЬЕЛЬ", "МАЛЬМЕ", "БРЮГГЕ", "ОСЛО", "ТРОНД", "ВЕСТА", "ЛИННЕА",
    "САГА", "НОРД", "ХЕЛЬГА", "ФРЕЯ", "АУРА", "ВИНТЕР", "ДЮНА", "БЕРГЕН", "ИЛЬМА",
    "СКОГ", "КАРИНА", "ЛОФТ", "ПРОВАНС", "ТАЙГА", "СОФТ",
)  # fmt: skip

COLORS: tuple[str, ...] = (
    "белый", "серый", "графит", "бежевый", "дуб натуральный", "орех", "чёрный",
    "тёмно-синий", "зелёный шалфей", "терракота",
)  # fmt: skip

COLORS_TEXTILE: tuple[str, ...] = (
    "белый", "серый", "бежевый", "молочный", "пыльная роза", "тёмно-синий", "зелёный шалфей",
    "терракота", "голубой", "жёлтый",
)  # fmt: skip

MATERIALS_DURABLE: tuple[str, ...] = (
    "ЛДСП", "МДФ", "массив сосны", "массив дуба", "металл", "велюр", "рогожка", "экокожа",
    "стекло", "керамика",
)  # fmt: skip
MATERIALS_TEXTILE: tuple[str, ...] = ("хлопок", "лён", "сатин", "махра", "полиэстер", "бамбук")
MATERIALS_CONSUMABLE: tuple[str, ...] = ("воск", "натуральные масла", "гель", "крем", "бумага")

# User agents for the web channel (analytics.js) and device blocks for the apps.
WEB_USER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 YaBrowser/24.4.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
)
WEB_LIBRARY = '{"name":"analytics.js","version":"next-1.70.0"}'
APP_CONTEXTS: tuple[str, ...] = (
    '"library":{"name":"analytics-ios","version":"4.1.8"},'
    '"app":{"name":"Demo Shop","version":"3.12.0","build":"3120","namespace":"example.demoshop"},'
    '"device":{"type":"ios","manufacturer":"Apple","model":"iPhone14,5"},'
    '"os":{"name":"iOS","version":"17.4.1"}',
    '"library":{"name":"analytics-android","version":"4.11.3"},'
    '"app":{"name":"Demo Shop","version":"3.12.0","build":"3120","namespace":"example.demoshop"},'
    '"device":{"type":"android","manufacturer":"Samsung","model":"SM-A546B"},'
    '"os":{"name":"Android","version":"14"}',
)
IP_FIRST_OCTETS: tuple[int, ...] = (
    5,
    31,
    37,
    46,
    77,
    78,
    79,
    85,
    91,
    93,
    94,
    95,
    109,
    176,
    178,
    188,
    212,
    213,
    217,
)

# Paid traffic sources seen on anonymous landings: (source, medium, campaign name).
AD_CAMPAIGNS: tuple[tuple[str, str, str], ...] = (
    ("yandex", "cpc", "kitchens_always_on"),
    ("yandex", "cpc", "sofas_sale"),
    ("vk", "paid_social", "home_inspiration"),
    ("telegram", "social", "new_collection"),
    ("google", "cpc", "brand"),
    ("yandex", "display", "retargeting"),
)

SITE = "https://demo-shop.example"
HOME_TITLE = "Demo Shop — мебель и товары для дома"
