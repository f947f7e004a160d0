"""W2's Nexmark queries as Daft dataframes, for benches/w2_nexmark.rs.

Usage: daft_w2.py <q0|q1|q2|q14|q21|q22> <bids.parquet>

Reads the same Bid file as the Flumen jobs, runs the query on Daft's native
(local, multi-threaded) runner, and counts the result partition by partition
without keeping it (the Flumen jobs end in a discarding sink). Prints
`rows=<n>` on success. The whole process is what the bench times.
"""

import sys

import daft
from daft import col, lit

# q21's channel id in a URL's query string (the same pattern the Flumen job uses).
CHANNEL_ID = r"(&|^)channel_id=([^&]*)"


def query(name: str, df: daft.DataFrame) -> daft.DataFrame:
    if name == "q0":
        return df
    if name == "q1":
        return df.with_column("price", col("price") * 0.908)
    if name == "q2":
        return df.where(col("auction") % 123 == 0).select("auction", "price")
    if name == "q14":
        euros = col("price") * 0.908
        hour = (col("date_time") // 3_600_000) % 24
        time_type = (
            ((hour >= 8) & (hour <= 18))
            .if_else(lit("dayTime"), ((hour <= 6) | (hour >= 20)).if_else(lit("nightTime"), lit("otherTime")))
            .alias("bid_time_type")
        )
        return df.where((euros > 1_000_000) & (euros < 50_000_000)).select(
            "auction", "bidder", euros.alias("price"), time_type, "date_time", "extra"
        )
    if name == "q21":
        channel = col("channel").str.lower()
        extracted = col("url").str.extract(CHANNEL_ID, 2)
        known = channel.is_in(["apple", "google", "facebook", "baidu"])
        channel_id = (
            (channel == "apple")
            .if_else(
                lit("0"),
                (channel == "google").if_else(
                    lit("1"),
                    (channel == "facebook").if_else(lit("2"), (channel == "baidu").if_else(lit("3"), extracted)),
                ),
            )
            .alias("channel_id")
        )
        return df.where(extracted.not_null() | known).select("auction", "bidder", "price", "channel", channel_id)
    if name == "q22":
        parts = col("url").str.split("/")
        return df.select(
            "auction",
            "bidder",
            "price",
            "channel",
            parts.list.get(3, default="").alias("dir1"),
            parts.list.get(4, default="").alias("dir2"),
            parts.list.get(5, default="").alias("dir3"),
        )
    raise SystemExit(f"unknown query {name!r}")


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    name, path = sys.argv[1], sys.argv[2]
    df = query(name, daft.read_parquet(path))
    rows = sum(len(part) for part in df.iter_partitions())
    print(f"rows={rows}")


if __name__ == "__main__":
    main()
