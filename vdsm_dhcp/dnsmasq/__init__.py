"""dnsmasq"""
