# yaml.awk - flatten the YAML subset found in NoCloud seeds into lines
#
#     path=value
#
# Mapping keys are joined with ".", sequence items get their index
# (ssh_authorized_keys.0, ethernets.eth0.routes.0.via).  In values a
# backslash is written as "\\" and a newline as "\n" (yq.awk decodes).
#
# Handles: block mappings and sequences (sequences indented or not under
# their key), "- key: value" items, plain / 'single' / "double" quoted
# scalars (keys too), comments, multi-line plain scalars (PyYAML folds
# long lines), literal and folded block scalars (| > with - / +), flow
# collections [a, b] {k: v} (nested, across lines; so JSON works), tags
# like !!str, document markers.  Anchors, aliases and complex keys are not
# supported.  Written for busybox awk.

function enc(s) { gsub(/\\/, "\\\\", s); gsub(/\n/, "\\n", s); return s }
function out(p, v) { print p "=" enc(v) }
function pjoin(a, b) { return (a == "" ? b : a "." b) }
function ltrim(s) { sub(/^[ \t]+/, "", s); return s }
function rtrim(s) { sub(/[ \t\r]+$/, "", s); return s }
function isnull(v) { return v == "~" || v == "null" || v == "Null" || v == "NULL" }

# drop a tag (!!str, !foo) or an anchor (&a) in front of a value
function untag(v) {
	while (v ~ /^(!|&)[^ \t]*([ \t]|$)/) { sub(/^(!|&)[^ \t]*[ \t]*/, "", v) }
	return v
}

# a plain scalar: strip a " #comment" and surrounding blanks
function plain(s,   i) {
	i = match(s, /[ \t]#/)
	if (i) s = substr(s, 1, i - 1)
	s = rtrim(ltrim(s))
	if (isnull(s)) s = ""
	return s
}

function hexval(h,   i, n, c) {
	n = 0
	h = tolower(h)
	for (i = 1; i <= length(h); i++) {
		c = index("0123456789abcdef", substr(h, i, 1))
		if (c == 0) return -1
		n = n * 16 + c - 1
	}
	return n
}

# A quoted scalar at the start of s.  Returns its value; sets QLEN to the
# number of characters used and QOPEN to 1 when the closing quote is missing.
function qscalar(s,   q, i, n, ch, v, nx, h) {
	q = substr(s, 1, 1)
	v = ""
	n = length(s)
	QOPEN = 0
	for (i = 2; i <= n; i++) {
		ch = substr(s, i, 1)
		if (ch == "\n") {
			# a line break inside a quoted scalar folds into one space
			sub(/[ \t]+$/, "", v)
			while (i < n && substr(s, i + 1, 1) ~ /[ \t]/) i++
			v = v " "
			continue
		}
		if (q == "'") {
			if (ch == "'") {
				if (substr(s, i + 1, 1) == "'") { v = v "'"; i++; continue }
				QLEN = i
				return v
			}
			v = v ch
			continue
		}
		if (ch == "\"") { QLEN = i; return v }
		if (ch == "\\" && i < n) {
			i++
			nx = substr(s, i, 1)
			if (nx == "n") v = v "\n"
			else if (nx == "t") v = v "\t"
			else if (nx == "r") v = v "\r"
			else if (nx == "0") v = v ""
			else if (nx == "e") v = v "\033"
			else if (nx == " ") v = v " "
			else if (nx == "x" && hexval(substr(s, i + 1, 2)) >= 0) {
				h = hexval(substr(s, i + 1, 2)); i += 2
				v = v sprintf("%c", h)
			} else v = v nx
			continue
		}
		v = v ch
	}
	QLEN = n
	QOPEN = 1
	return v
}

# Is c a "key: value" (or "key:") line?  Sets KEY and VAL.
function splitkey(c,   i, rest) {
	if (c ~ /^["']/) {
		KEY = qscalar(c)
		if (QOPEN) return 0
		rest = substr(c, QLEN + 1)
		sub(/^[ \t]+/, "", rest)
		if (rest !~ /^:([ \t]|$)/) return 0
		VAL = ltrim(substr(rest, 2))
		return 1
	}
	if (c ~ /^([\[{#|>]|- |-$)/) return 0
	i = match(c, /:([ \t]|$)/)
	if (!i) return 0
	KEY = rtrim(substr(c, 1, i - 1))
	VAL = ltrim(substr(c, i + 1))
	return 1
}

# ---- flow collections ----------------------------------------------------
function balanced(s,   i, n, ch, depth, q) {
	depth = 0; q = ""; n = length(s)
	for (i = 1; i <= n; i++) {
		ch = substr(s, i, 1)
		if (q != "") {
			if (q == "\"" && ch == "\\") { i++; continue }
			if (ch == q) q = ""
			continue
		}
		if (ch == "\"" || ch == "'") q = ch
		else if (ch == "[" || ch == "{") depth++
		else if (ch == "]" || ch == "}") depth--
	}
	return depth <= 0 && q == ""
}
function fskip() { while (FP <= FN && substr(FB, FP, 1) ~ /[ \t\n]/) FP++ }
function fscalar(iskey,   ch, st, v, c2) {
	fskip()
	ch = substr(FB, FP, 1)
	if (ch == "\"" || ch == "'") {
		v = qscalar(substr(FB, FP))
		FP += QLEN
		return v
	}
	st = FP
	while (FP <= FN) {
		ch = substr(FB, FP, 1)
		if (ch == "," || ch == "]" || ch == "}") break
		if (iskey && ch == ":") {
			c2 = substr(FB, FP + 1, 1)
			if (c2 == "" || c2 == " " || c2 == "\t" || c2 == "\n" || c2 == "," || c2 == "]" || c2 == "}") break
		}
		FP++
	}
	v = rtrim(substr(FB, st, FP - st))
	gsub(/[ \t]*\n[ \t]*/, " ", v)
	if (isnull(v)) v = ""
	return v
}
function fvalue(p,   ch, idx, k) {
	fskip()
	ch = substr(FB, FP, 1)
	if (ch == "[") {
		FP++
		idx = 0
		while (FP <= FN) {
			fskip()
			ch = substr(FB, FP, 1)
			if (ch == "]") { FP++; return }
			if (ch == ",") { FP++; continue }
			fvalue(pjoin(p, idx))
			idx++
		}
		return
	}
	if (ch == "{") {
		FP++
		while (FP <= FN) {
			fskip()
			ch = substr(FB, FP, 1)
			if (ch == "}") { FP++; return }
			if (ch == ",") { FP++; continue }
			k = fscalar(1)
			fskip()
			if (substr(FB, FP, 1) == ":") { FP++; fvalue(pjoin(p, k)) }
			else out(pjoin(p, k), "")
		}
		return
	}
	out(p, fscalar(0))
}
function flow(p, s) { FB = s; FN = length(s); FP = 1; fvalue(p) }

# ---- pending output (a plain scalar may continue on following lines) -------
function setlast(p, v, oi) { LASTP = p; LASTV = v; LASTI = oi; HAVELAST = 1 }
function flushlast() { if (HAVELAST) out(LASTP, LASTV); HAVELAST = 0 }

function push(n, k, p) { SP++; IND[SP] = n; KIND[SP] = k; PATH[SP] = p; CNT[SP] = 0 }

# a value that follows "key:" or "- "; oi is the indentation of its owner
function value(p, v, oi,   s) {
	v = untag(v)
	if (v ~ /^[|>]/) {
		INBLK = 1; BLKP = p; BLKI = oi; BLKSTY = substr(v, 1, 1)
		BLKCH = (v ~ /^.[1-9]?-/ ? "-" : (v ~ /^.[1-9]?\+/ ? "+" : ""))
		BLKBUF = ""; BLKCI = -1
		return
	}
	if (v ~ /^[\[{]/) {
		if (balanced(v)) flow(p, v)
		else { INFLOW = 1; FLOWP = p; FLOWBUF = v }
		return
	}
	if (v ~ /^["']/) {
		s = qscalar(v)
		if (QOPEN) { INQ = 1; QP = p; QRAW = v; return }
		out(p, s)
		return
	}
	setlast(p, plain(v), oi)
}

function endblock(   v, i, nl, lines, m, prevblank) {
	v = BLKBUF
	if (BLKSTY == ">") {
		m = split(v, lines, "\n")
		v = ""; prevblank = 1
		for (i = 1; i <= m; i++) {
			if (lines[i] == "") { v = v "\n"; prevblank = 1; continue }
			v = v (prevblank ? "" : " ") lines[i]
			prevblank = 0
		}
		if (BLKBUF ~ /\n$/) v = v "\n"
	}
	if (BLKCH == "-") sub(/\n+$/, "", v)
	else if (BLKCH == "") { sub(/\n+$/, "", v); if (v != "") v = v "\n" }
	out(BLKP, v)
	INBLK = 0
}

function handle(n, c,   p, rest, off, col, isdash, idx) {
	isdash = (c ~ /^-([ \t]|$)/)
	if (PEND != "") {
		if (isdash && (n > PENDI || (n == PENDI && !PENDSEQ))) push(n, "seq", PEND)
		else if (n > PENDI) push(n, "map", PEND)
		else out(PEND, "")
		PEND = ""
	}
	while (SP > 0 && (IND[SP] > n || (IND[SP] == n && KIND[SP] == "seq" && !isdash))) SP--
	if (SP == 0 && c ~ /^[\[{]/) { value("", c, -1); return }
	if (SP == 0) push(n, isdash ? "seq" : "map", "")
	else if (IND[SP] < n) return            # unexpected indentation: ignore
	if (KIND[SP] == "seq") {
		if (!isdash) return
		idx = CNT[SP]++
		p = pjoin(PATH[SP], idx)
		rest = substr(c, 2)
		off = match(rest, /[^ \t]/)
		if (!off || substr(rest, off, 1) == "#") { PEND = p; PENDI = n; PENDSEQ = 1; return }
		rest = substr(rest, off)
		col = n + off
		if (rest ~ /^-([ \t]|$)/) { push(col, "seq", p); handle(col, rest); return }
		if (splitkey(rest)) { push(col, "map", p); handle(col, rest); return }
		value(p, rest, n)
		return
	}
	if (!splitkey(c)) return
	p = pjoin(PATH[SP], KEY)
	if (VAL == "" || VAL ~ /^#/) { PEND = p; PENDI = n; PENDSEQ = 0; return }
	value(p, VAL, n)
}

BEGIN { SP = 0; PEND = ""; HAVELAST = 0; INBLK = 0; INFLOW = 0; INQ = 0 }

{
	line = $0
	sub(/\r$/, "", line)
	if (INBLK) {
		if (line ~ /^ *$/) { BLKBUF = BLKBUF "\n"; next }
		n = match(line, /[^ ]/) - 1
		if (n > BLKI) {
			if (BLKCI < 0) BLKCI = n
			BLKBUF = BLKBUF substr(line, (n < BLKCI ? n : BLKCI) + 1) "\n"
			next
		}
		endblock()
	}
	if (INFLOW) {
		FLOWBUF = FLOWBUF "\n" line
		if (balanced(FLOWBUF)) { INFLOW = 0; flow(FLOWP, FLOWBUF) }
		next
	}
	if (INQ) {
		QRAW = QRAW " " ltrim(line)
		s = qscalar(QRAW)
		if (!QOPEN) { INQ = 0; out(QP, s) }
		next
	}
	if (line ~ /^(---|\.\.\.)( |$)/) {
		flushlast()
		if (PEND != "") { out(PEND, ""); PEND = "" }
		SP = 0
		rest = substr(line, 4)
		if (line ~ /^---/ && rest ~ /[^ ]/) { rest = ltrim(rest); value("", rest, -1) }
		next
	}
	if (line ~ /^ *(#|$)/) next
	n = match(line, /[^ ]/) - 1
	c = rtrim(substr(line, n + 1))
	if (HAVELAST && n > LASTI) { LASTV = LASTV " " plain(c); next }
	flushlast()
	handle(n, c)
}

END {
	if (INBLK) endblock()
	if (INQ) out(QP, qscalar(QRAW))
	if (INFLOW) flow(FLOWP, FLOWBUF)
	flushlast()
	if (PEND != "") out(PEND, "")
}
