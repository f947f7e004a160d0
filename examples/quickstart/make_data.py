"""Regenerates data/events.csv: a day of web shop events (seeded, deterministic)."""
import csv
import random

random.seed(7)
hosts = ["shop.example.com", "cdn.example.net", "api.example.org", "blog.example.com"]
paths = ["/", "/cart", "/checkout", "/item/{}", "/search?q={}", "/static/app.js"]
with open("data/events.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["ts", "user_id", "url", "status", "amount"])
    for i in range(2000):
        host = random.choice(hosts)
        path = random.choice(paths).format(random.randint(1, 500))
        status = random.choices([200, 301, 404, 500], weights=[80, 5, 10, 5])[0]
        amount = round(random.uniform(1, 250), 2) if path.startswith("/checkout") and status == 200 else 0.0
        ts = 1_700_000_000_000 + i * 43_000
        w.writerow([ts, random.randint(1, 300), f"https://{host}{path}", status, amount])
