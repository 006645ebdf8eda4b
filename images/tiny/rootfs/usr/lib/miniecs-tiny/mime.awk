# mime.awk - split a MIME message (cloud-init user data) into parts
#
#   awk -f mime.awk -v outdir=DIR -v prefix=part MESSAGE
#
# Writes each leaf part's body to DIR/PREFIX-NNN and prints one line per
# part: "FILE<TAB>content-type<TAB>transfer-encoding" (both lower case, the
# type without parameters).  A nested multipart part is written with its
# headers so that it can be split again.  A message that is not multipart
# is one part.  Header lines folded onto several lines are joined.  Written
# for busybox awk.

function param(v, name,   lv, rest, i) {
	lv = tolower(v)
	if (!match(lv, "(^|;)[ \t]*" name "[ \t]*=")) return ""
	rest = substr(v, RSTART + RLENGTH)
	sub(/^[ \t]+/, "", rest)
	if (substr(rest, 1, 1) == "\"") {
		rest = substr(rest, 2)
		i = index(rest, "\"")
		return i ? substr(rest, 1, i - 1) : rest
	}
	sub(/[ \t]*;.*$/, "", rest)
	sub(/[ \t]+$/, "", rest)
	return rest
}
function mtype(v) {
	v = tolower(v)
	sub(/;.*$/, "", v)
	gsub(/[ \t]/, "", v)
	return v == "" ? "text/plain" : v
}
function addhdr(l) {
	if (l ~ /^[ \t]/ && NH > 0) { H[NH] = H[NH] " " l; sub(/^[ \t]+/, "", l); return }
	H[++NH] = l
}
function gethdr(name,   i, h) {
	for (i = 1; i <= NH; i++) {
		h = H[i]
		if (tolower(substr(h, 1, length(name) + 1)) == name ":") {
			h = substr(h, length(name) + 2)
			sub(/^[ \t]+/, "", h)
			return h
		}
	}
	return ""
}
# headers collected: open the file for the part that follows
function startpart(   ct, enc, i) {
	ct = gethdr("content-type")
	enc = tolower(gethdr("content-transfer-encoding"))
	gsub(/[ \t]/, "", enc)
	if (enc == "") enc = "7bit"
	F = sprintf("%s/%s-%03d", outdir, prefix, ++N)
	printf "" > F
	if (mtype(ct) ~ /^multipart\//) {
		for (i = 1; i <= NH; i++) print H[i] > F
		print "" > F
	}
	printf "%s\t%s\t%s\n", F, mtype(ct), enc
}
function endpart() { if (F != "") close(F); F = "" }

BEGIN { if (prefix == "") prefix = "part"; state = "top"; NH = 0; N = 0; F = "" }

{ sub(/\r$/, "") }

state == "top" {
	if ($0 != "") { addhdr($0); next }
	ct = gethdr("content-type")
	if (mtype(ct) ~ /^multipart\//) {
		B = param(ct, "boundary")
		state = (B == "" ? "done" : "preamble")
	} else {
		startpart()
		state = "single"
	}
	next
}

state == "single" { print > F; next }

state == "preamble" || state == "body" {
	l = $0
	sub(/[ \t]+$/, "", l)
	if (l == "--" B "--") { endpart(); state = "done"; next }
	if (l == "--" B) { endpart(); NH = 0; state = "hdr"; next }
	if (state == "body") print > F
	next
}

state == "hdr" {
	if ($0 != "") { addhdr($0); next }
	startpart()
	state = "body"
	next
}

END { endpart() }
