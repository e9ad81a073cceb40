"""The IPAM sources behind one interface (base): the JSON file, Neutron;
and the one validation boundary of their data (validate)."""
