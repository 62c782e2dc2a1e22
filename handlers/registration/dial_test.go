package registration

import (
	"errors"
	"net/netip"
	"testing"
)

// The SSRF table: which addresses a metadata document may be fetched from.
// Every row is checked through the dialer's control hook, the function the
// socket calls with the address it is about to connect to, so that no row
// ever connects anywhere.
func TestPublicAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr     string
		public   bool
		loopback bool // allowed when loopback is
	}{
		{"93.184.215.14", true, true},
		{"8.8.8.8", true, true},
		{"2606:4700:4700::1111", true, true},
		{"::ffff:93.184.215.14", true, true},

		// Loopback, in its forms.
		{"127.0.0.1", false, true},
		{"127.1.2.3", false, true},
		{"::1", false, true},
		{"::ffff:127.0.0.1", false, true},
		{"::ffff:7f00:1", false, true},

		// Private, shared, link-local, metadata.
		{"10.0.0.1", false, false},
		{"172.16.0.1", false, false},
		{"172.31.255.254", false, false},
		{"192.168.1.1", false, false},
		{"100.64.0.1", false, false},
		{"100.100.100.200", false, false}, // Alibaba Cloud metadata
		{"169.254.169.254", false, false}, // AWS, GCP, Azure IMDS
		{"169.254.170.2", false, false},   // ECS task metadata
		{"168.63.129.16", false, false},   // Azure platform endpoint
		{"192.0.0.192", false, false},     // Oracle Cloud metadata
		{"fd00:ec2::254", false, false},   // AWS IMDS over IPv6
		{"fd20:ce::254", false, false},    // GCP metadata over IPv6
		{"fc00::1", false, false},
		{"fe80::1", false, false},
		{"fe80::1%eth0", false, false},
		{"::ffff:10.0.0.1", false, false},
		{"::ffff:169.254.169.254", false, false},
		{"::ffff:a9fe:a9fe", false, false},
		{"::10.0.0.1", false, false},                           // IPv4-compatible
		{"64:ff9b::a9fe:a9fe", false, false},                   // NAT64 of 169.254.169.254
		{"64:ff9b::7f00:1", false, false},                      // NAT64 of 127.0.0.1
		{"2002:7f00:1::1", false, false},                       // 6to4 of 127.0.0.1
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", false, false}, // Teredo

		// Unspecified, multicast, broadcast, reserved, documentation.
		{"0.0.0.0", false, false},
		{"0.1.2.3", false, false},
		{"::", false, false},
		{"224.0.0.1", false, false},
		{"239.255.255.250", false, false},
		{"ff02::1", false, false},
		{"255.255.255.255", false, false},
		{"240.0.0.1", false, false},
		{"192.0.2.1", false, false},
		{"198.51.100.1", false, false},
		{"203.0.113.1", false, false},
		{"198.18.0.1", false, false},
		{"2001:db8::1", false, false},
		{"fec0::1", false, false},
		{"100::1", false, false},
		{"4000::1", false, false}, // outside 2000::/3
	} {
		ip := netip.MustParseAddr(tc.addr)
		if got := publicAddress(ip, false); got != tc.public {
			t.Errorf("publicAddress(%s) = %v, want %v", tc.addr, got, tc.public)
		}
		if got := publicAddress(ip, true); got != tc.loopback {
			t.Errorf("publicAddress(%s, loopback allowed) = %v, want %v", tc.addr, got, tc.loopback)
		}
		// The hook the socket calls.
		for _, loopback := range []bool{false, true} {
			d := &guardedDialer{loopback: loopback}
			err := d.control("tcp", netip.AddrPortFrom(ip.WithZone(""), 443).String(), nil)
			want := tc.public || loopback && tc.loopback
			if (err == nil) != want || (err != nil && !errors.Is(err, errBlockedAddress)) {
				t.Errorf("control(%s, loopback %v) = %v, want allowed=%v", tc.addr, loopback, err, want)
			}
		}
	}
	d := &guardedDialer{}
	if err := d.control("tcp", "not-an-address", nil); !errors.Is(err, errBlockedAddress) {
		t.Errorf("control of an unparsable address: %v", err)
	}
}
