"""What both directions use on the wire: the SMTP client (delivery and callouts), direct
socket writes, and the delivery contract's types."""
