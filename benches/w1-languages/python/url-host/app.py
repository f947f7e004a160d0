# W1 per language: host = the host of an http(s) URL (utf8), in Python, by byte search over the data buffer.
import flumen


class UrlHost(flumen.Operator):
    def open(self, ctx):
        col = ctx.column("url", flumen.UTF8)
        return ctx.plan(reads=[col], carry=True, add=[flumen.Field("host", flumen.UTF8)])

    def process(self, port, batch, out):
        col = batch[0]
        offs = col.offsets().tolist()
        data = col.data()
        valid = col.validity()
        find, rfind, startswith = data.find, data.rfind, data.startswith
        hosts = []
        push = hosts.append
        for i in range(len(col)):
            if valid is not None and not valid[i]:
                push(None)
                continue
            s, e = offs[i], offs[i + 1]
            # The scheme, ASCII case-insensitive; the lower-cased copy only off the common path.
            if startswith(b"https://", s, e):
                st = s + 8
            elif startswith(b"http://", s, e):
                st = s + 7
            else:
                head = data[s:min(s + 8, e)].lower()
                if head == b"https://":
                    st = s + 8
                elif head[:7] == b"http://":
                    st = s + 7
                else:
                    push(None)
                    continue
            # The authority ends at the first `/`, `?` or `#`.
            end = e
            j = find(b"/", st, end)
            if j >= 0:
                end = j
            j = find(b"?", st, end)
            if j >= 0:
                end = j
            j = find(b"#", st, end)
            if j >= 0:
                end = j
            # Less `user@`, then less `:port` (a bracketed IPv6 host keeps its brackets).
            j = rfind(b"@", st, end)
            hs = j + 1 if j >= 0 else st
            if hs < end and data[hs] == 0x5B:
                j = find(b"]", hs, end)
                if j < 0:
                    push(None)
                    continue
                he = j + 1
            else:
                j = find(b":", hs, end)
                he = j if j >= 0 else end
            push(data[hs:he] if he > hs else None)
        # The hosts are slices of valid UTF-8 cut at ASCII bytes, so the binary
        # builder's buffers are a valid utf8 column: no decode and re-encode per row.
        out.emit(flumen.Array(flumen.UTF8, len(hosts), flumen.binary(hosts).column))


Transform, Snapshot, EventTime = flumen.export(UrlHost)
