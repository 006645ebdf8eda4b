# yq.awk - query the output of yaml.awk
#
#   awk -f yq.awk -v mode=get      -v key=a.b   FLAT...  last value of a.b
#   awk -f yq.awk -v mode=list     -v key=a.b   FLAT...  scalar items a.b.N, one a line
#   awk -f yq.awk -v mode=children -v key=a.b   FLAT...  names directly under a.b
#   awk -f yq.awk -v mode=commands -v key=runcmd FLAT... cloud-init style
#        command list as shell lines: a string item verbatim, a list item
#        as its shell-quoted words
#   awk -f yq.awk -v mode=vars -v key="a b.c" FLAT...   shell assignments
#        a='...' b_c='...' (last values; every name is assigned, maybe '')
#   awk -f yq.awk -v mode=net -v key=ethernets FLAT...  network-config v2
#        ethernets as lines for "read": "IF id mac name set-name mtu dhcp4
#        gateway4 gateway6", "ADDR id address", "ROUTE id to via metric",
#        "NS address", "SEARCH domain"; an absent value is "-"
#
# An empty key means the top level (for children); list takes several keys
# separated by spaces.  Written for busybox awk.

function dec(s,   o, i, n, ch, nx) {
	if (index(s, "\\") == 0) return s
	o = ""; n = length(s)
	for (i = 1; i <= n; i++) {
		ch = substr(s, i, 1)
		if (ch == "\\" && i < n) {
			nx = substr(s, ++i, 1)
			o = o (nx == "n" ? "\n" : nx)
		} else o = o ch
	}
	return o
}
function shq(s) { gsub(/'/, "'\\''", s); return "'" s "'" }

BEGIN {
	pre = (key == "" ? "" : key ".")
	nseen = 0
	found = 0
	nkeys = split(key, keys, " ")
	for (i = 1; i <= nkeys; i++) want[keys[i]] = i
}

{
	eq = index($0, "=")
	if (eq == 0) next
	p = substr($0, 1, eq - 1)
	v = substr($0, eq + 1)
}

mode == "get" && p == key { val = v; found = 1; next }

mode == "list" {
	d = match(p, /\.[0-9]+$/)
	if (d && (substr(p, 1, d - 1) in want)) print dec(v)
	next
}

mode == "vars" && (p in want) { vals[p] = v; next }

mode == "net" && substr(p, 1, length(pre)) == pre {
	rest = substr(p, length(pre) + 1)
	d = index(rest, ".")
	if (!d) next
	id = substr(rest, 1, d - 1)
	k = substr(rest, d + 1)
	if (!(id in nets)) { nets[id] = 1; ids[++nids] = id }
	v = dec(v)
	gsub(/[ \t\n]/, "", v)
	if (v == "") v = "-"
	if (k ~ /^addresses\.[0-9]+$/) addrs[++naddr] = id " " v
	else if (k ~ /^routes\.[0-9]+\.(to|via|metric)$/) {
		split(k, rk, ".")
		r = id SUBSEP rk[2]
		if (!(r in rseen)) { rseen[r] = 1; routes[++nroute] = r }
		rv[r, rk[3]] = v
	}
	else if (k ~ /^nameservers\.addresses\.[0-9]+$/) ns[++nns] = v
	else if (k ~ /^nameservers\.search\.[0-9]+$/) search[++nsearch] = v
	else net[id, k] = v
	next
}

mode == "children" && substr(p, 1, length(pre)) == pre {
	rest = substr(p, length(pre) + 1)
	d = index(rest, ".")
	name = (d ? substr(rest, 1, d - 1) : rest)
	if (!(name in seen)) { seen[name] = 1; print name }
	next
}

mode == "commands" && substr(p, 1, length(pre)) == pre {
	rest = substr(p, length(pre) + 1)
	if (rest ~ /^[0-9]+$/) {
		flushcmd()
		print dec(v)
		next
	}
	if (rest ~ /^[0-9]+\.[0-9]+$/) {
		n = substr(rest, 1, index(rest, ".") - 1)
		if (n != curn) { flushcmd(); curn = n }
		cmd = (cmd == "" ? "" : cmd " ") shq(dec(v))
	}
	next
}

function flushcmd() { if (cmd != "") print cmd; cmd = ""; curn = "" }

function nv(id, k) { return ((id, k) in net) ? net[id, k] : "-" }
function shq1(s) { gsub(/'/, "'\\''", s); return "'" s "'" }

END {
	if (mode == "get" && found) print dec(val)
	if (mode == "commands") flushcmd()
	if (mode == "vars") {
		for (i = 1; i <= nkeys; i++) {
			name = keys[i]
			gsub(/[^A-Za-z0-9_]/, "_", name)
			print name "=" shq1(dec(vals[keys[i]]))
		}
	}
	if (mode == "net") {
		for (i = 1; i <= nids; i++) {
			id = ids[i]
			print "IF", id, tolower(nv(id, "match.macaddress")), nv(id, "match.name"), nv(id, "set-name"),
				nv(id, "mtu"), nv(id, "dhcp4"), nv(id, "gateway4"), nv(id, "gateway6")
		}
		for (i = 1; i <= naddr; i++) print "ADDR", addrs[i]
		for (i = 1; i <= nroute; i++) {
			r = routes[i]
			split(r, rk, SUBSEP)
			print "ROUTE", rk[1], (((r, "to") in rv) ? rv[r, "to"] : "-"),
				(((r, "via") in rv) ? rv[r, "via"] : "-"), (((r, "metric") in rv) ? rv[r, "metric"] : "-")
		}
		for (i = 1; i <= nns; i++) print "NS", ns[i]
		for (i = 1; i <= nsearch; i++) print "SEARCH", search[i]
	}
}
