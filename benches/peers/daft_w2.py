"""W2's Nexmark queries as Daft dataframes, for benches/w2_nexmark.rs.

Usage: daft_w2.py <q0|q1|q2|q14|q21|q22> <bids.parquet>

Reads the same Bid file as the Flumen jobs, runs the query on Daft's native
(local, multi-threaded) runner, and counts the result partition by partition
without keeping it (the Flumen jobs end in a discarding sink). Prints
`rows=<n>` on success. The whole process is what the bench times.
"""

import os
import sys

import daft
from daft import col, lit
from daft.functions import is_in, lower, regexp_extract, split_part, when

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
            when((hour >= 8) & (hour <= 18), lit("dayTime"))
            .when((hour <= 6) | (hour >= 20), lit("nightTime"))
            .otherwise(lit("otherTime"))
            .alias("bid_time_type")
        )
        return df.where((euros > 1_000_000) & (euros < 50_000_000)).select(
            "auction", "bidder", euros.alias("price"), time_type, "date_time", "extra"
        )
    if name == "q21":
        channel = lower(col("channel"))
        extracted = regexp_extract(col("url"), CHANNEL_ID, 2)
        known = is_in(channel, ["apple", "google", "facebook", "baidu"])
        channel_id = (
            when(channel == "apple", lit("0"))
            .when(channel == "google", lit("1"))
            .when(channel == "facebook", lit("2"))
            .when(channel == "baidu", lit("3"))
            .otherwise(extracted)
            .alias("channel_id")
        )
        return df.where(extracted.not_null() | known).select("auction", "bidder", "price", "channel", channel_id)
    if name == "q22":
        return df.select(
            "auction",
            "bidder",
            "price",
            "channel",
            split_part(col("url"), "/", 4).alias("dir1"),
            split_part(col("url"), "/", 5).alias("dir2"),
            split_part(col("url"), "/", 6).alias("dir3"),
        )
    raise SystemExit(f"unknown query {name!r}")


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    name, path = sys.argv[1], sys.argv[2]
    df = query(name, daft.read_parquet(path))
    rows = sum(len(part) for part in df.iter_partitions())
    print(f"rows={rows}", flush=True)
    # Daft 0.7's native runner can abort in interpreter finalization
    # ("PyGILState_Release ... must be current") after the work is done;
    # the count is out, so leave without finalizing.
    os._exit(0)


if __name__ == "__main__":
    main()
