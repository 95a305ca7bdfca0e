"""Tests of the LDAP / Active Directory source, against real slapd and Samba AD servers."""
