package registration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// Fetching a metadata document means connecting to an address a stranger
// chose, from inside the IdP's network: the classic server-side request
// forgery. The guard is at the one place no trick gets around: the socket,
// just before it connects (net.Dialer.Control), with the address it is
// about to connect to. Checking the name first would not do: a name can
// resolve to a public address when checked and to 127.0.0.1 or the cloud's
// metadata service when connected to (DNS rebinding). Redirects are
// refused, and no proxy is used (a proxy would resolve the name itself).

// errBlockedAddress is a connection refused because its address is not a
// public one.
var errBlockedAddress = errors.New("not a public address")

// blockedPrefixes are the networks a document is never fetched from, over
// and above what publicAddress refuses by kind: shared and reserved IPv4
// space, IPv6 transition prefixes that embed an IPv4 address (which could be
// a private one), documentation ranges, and cloud metadata addresses.
var blockedPrefixes = mustPrefixes(
	"0.0.0.0/8",         // "this network"
	"100.64.0.0/10",     // shared address space (CGNAT; Alibaba Cloud's metadata at 100.100.100.200)
	"168.63.129.16/32",  // Azure's platform endpoint (public space)
	"192.0.0.0/24",      // IETF protocol assignments (Oracle Cloud's metadata at 192.0.0.192)
	"192.0.2.0/24",      // documentation
	"192.88.99.0/24",    // 6to4 relay anycast
	"198.18.0.0/15",     // benchmarking
	"198.51.100.0/24",   // documentation
	"203.0.113.0/24",    // documentation
	"240.0.0.0/4",       // reserved, and the broadcast address
	"::/96",             // IPv4-compatible (deprecated)
	"64:ff9b::/96",      // NAT64: embeds an IPv4 address
	"64:ff9b:1::/48",    // local-use NAT64
	"100::/64",          // discard-only
	"2001::/23",         // IETF protocol assignments, Teredo (embeds an IPv4 address)
	"2001:db8::/32",     // documentation
	"2002::/16",         // 6to4: embeds an IPv4 address
	"3fff::/20",         // documentation
	"5f00::/16",         // segment routing SIDs
	"fd00:ec2::254/128", // AWS's metadata over IPv6 (inside fc00::/7 anyway)
	"fec0::/10",         // site-local (deprecated)
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// publicAddress reports whether ip may be connected to: a global unicast
// address outside every private, loopback, link-local (169.254.169.254,
// the metadata address of most clouds, is link-local), multicast,
// unspecified and blocked network, with an IPv4 address in IPv6 form
// (::ffff:a.b.c.d) judged as the IPv4 address it is. With loopback, the
// loopback addresses (127.0.0.0/8, ::1) are allowed too.
func publicAddress(ip netip.Addr, loopback bool) bool {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() {
		return false
	}
	if ip.IsLoopback() {
		return loopback
	}
	if !ip.IsGlobalUnicast() || ip.IsPrivate() {
		// IsGlobalUnicast is false for unspecified, link-local, multicast
		// and interface-local addresses, and for 255.255.255.255.
		return false
	}
	if ip.Is6() && !netip.MustParsePrefix("2000::/3").Contains(ip) {
		return false // outside the global unicast space IANA allocates
	}
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// guardedDialer connects only to public addresses (publicAddress), and to
// loopback when allowed, checking each address right before its socket
// connects.
type guardedDialer struct {
	loopback bool
	// lookup resolves a host name; default net.DefaultResolver. A seam for
	// tests, which answer differently from one call to the next.
	lookup  func(ctx context.Context, host string) ([]netip.Addr, error)
	timeout time.Duration
}

// control is net.Dialer's Control: it runs with the address the socket is
// about to connect to, after any name resolution.
func (d *guardedDialer) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", address, errBlockedAddress)
	}
	if !publicAddress(ap.Addr(), d.loopback) {
		return fmt.Errorf("connect to %s: %w", ap.Addr(), errBlockedAddress)
	}
	return nil
}

// DialContext resolves addr's host and tries its addresses in turn; the
// control hook refuses each one that is not public.
func (d *guardedDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", portText, err)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		lookup := d.lookup
		if lookup == nil {
			lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
				return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			}
		}
		if ips, err = lookup(ctx, host); err != nil {
			return nil, err
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("%s: no addresses", host)
		}
	}
	dialer := &net.Dialer{Timeout: d.timeout, Control: d.control}
	var errs []error
	for _, ip := range ips {
		conn, err := dialer.DialContext(ctx, network, netip.AddrPortFrom(ip.Unmap(), uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}
